"""Entry point: routes between the pages and draws the shared sidebar. No logic lives here.

`streamlit run streamlit_app.py` finds `app` below and serves this file through it, adding the routes that set
and clear the HttpOnly sign-in cookie (core.web.signin_cookie); each page run executes the `else` branch.
"""

import streamlit as st

if __name__ != "__main__":  # imported by the server `streamlit run` starts, not a page run
    from streamlit.starlette import App

    from core.web import signin_cookie

    app = App(__file__, routes=signin_cookie.routes(st.get_option("server.baseUrlPath")))
else:
    from core.web import hosting
    from ui import auth, common
    from ui import working_settings as ws

    st.set_page_config(page_title="X-ray trainer", page_icon="🩻", layout="wide")
    if hosting.hosted():  # tracebacks stay in the server log; the browser sees a generic message
        st.set_option("client.showErrorDetails", "none")
    auth.gate()  # hosted without a sign-in: a refusal page only; else optional login (OIDC or shared password)

    PAGES = [
        st.Page("pages/1_dataset.py", title="Dataset explorer", icon=":material/folder_open:", default=True),
        st.Page("pages/2_setup.py", title="Training setup", icon=":material/tune:"),
        st.Page("pages/3_train.py", title="Training run", icon=":material/model_training:"),
        st.Page("pages/4_evaluate.py", title="Evaluation", icon=":material/monitoring:"),
        st.Page("pages/5_predict.py", title="Predict", icon=":material/online_prediction:"),
        st.Page("pages/6_experiments.py", title="Experiments", icon=":material/science:"),
    ]

    ws.restore()  # a reload, or another device of the same user, gets the kept settings back
    nav = st.navigation(PAGES)
    target = auth.next_page(PAGES)  # a deep link asked for before sign-in
    if target is not None and target.url_path != nav.url_path:
        st.switch_page(target)
    common.sidebar()
    nav.run()
