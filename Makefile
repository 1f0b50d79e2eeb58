# Two commands for a fresh machine (Python 3.10+, no GPU needed):
#   make run    install into .venv, generate the synthetic sample dataset, start the app
#   make test   install runtime + test tools (Chromium for browser tests, Ray for the Ray executor's tests), run the suite
PY ?= python3
VENV ?= .venv
PORT ?= 8501
# Empty: the address in .streamlit/config.toml (127.0.0.1, this machine only). A hosted server with a
# sign-in is opened to the network on purpose: XRT_HOSTED=1 XRT_PASSWORD=... make run ADDRESS=0.0.0.0
ADDRESS ?=

.PHONY: run test install install-dev lint bench clean lock

install:
	@bash scripts/install.sh $(PY) $(VENV) requirements.txt

install-dev:
	@bash scripts/install.sh $(PY) $(VENV) requirements-dev.txt
	@bash scripts/install.sh $(PY) $(VENV) requirements-ray.txt
	@bash scripts/install_browser.sh

run: install
	$(VENV)/bin/python -m core sample
	$(VENV)/bin/python -m streamlit run streamlit_app.py --server.port $(PORT) $(if $(ADDRESS),--server.address $(ADDRESS))

test: install-dev
	$(VENV)/bin/python -m ruff check core pages ui tests streamlit_app.py
	$(VENV)/bin/python -m ruff format --check core pages ui tests bench streamlit_app.py
	$(VENV)/bin/python -m mypy
	$(VENV)/bin/python -m pytest

lint: install-dev
	$(VENV)/bin/python -m ruff check core pages ui tests streamlit_app.py
	$(VENV)/bin/python -m ruff format --check core pages ui tests bench streamlit_app.py
	$(VENV)/bin/python -m mypy

# Refresh constraints.txt (exact versions of everything installed) from the ranges in requirements*.txt.
lock:
	bash scripts/lock.sh $(PY)

bench: install
	bash bench/run_all.sh

clean:
	rm -rf workspace .pytest_cache .mypy_cache
