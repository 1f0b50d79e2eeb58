"""The reporting checklist written from a run: values with their source files, a person's items marked, no
server paths; Markdown, the HTML report's section, the CLI and the model card."""

from __future__ import annotations

import json

import pandas as pd

from core.base.config import RunConfig, SourceConfig, to_dict
from core.evaluation import checklist
from tests.test_conformal import fake_single_run


def a_run(tmp_path):
    """fake_single_run plus the config, items table and env a training run writes."""
    run = fake_single_run(tmp_path / "run")
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path="/secret/site-x/labels.csv", group_col="patient_id")
    )
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    test = pd.read_csv(run / "test_predictions.csv")
    items = pd.DataFrame(
        {
            "relpath": test["path"],
            "label": test["label"],
            "split": "test",
            "kind": "image",
            "group": [f"anon-{i // 2}" for i in range(len(test))],
        }
    )
    items.to_csv(run / "items.csv", index=False)
    (run / "env.json").write_text(json.dumps({"xray_trainer": "0.1.0", "torch": "2.x", "device": "cpu"}))
    return run


def test_checklist_fills_what_the_run_knows_and_marks_the_rest(tmp_path):
    run = a_run(tmp_path)
    items = checklist.checklist(run, n_resamples=50)
    by_topic = {i.topic: i for i in items}
    assert by_topic["Data source"].value.startswith("csv source 'labels.csv'") and "/secret" not in str(items)
    assert (
        "300 images" in by_topic["Images per split and class"].value
        and "150 patients" in by_topic["Partitions and patient grouping"].value
    )
    perf = next(i for i in items if i.topic.startswith("Performance with 95 % CIs (test set, n = 300)"))
    assert "roc auc" in perf.value and "(" in perf.value and perf.source == "test_predictions.csv"
    assert by_topic["Calibration"].value.startswith("no temperature scaling (not fitted")
    assert "last epoch" in by_topic["Model selection"].value or "Model:" in by_topic["Model selection"].value
    assert by_topic["Uncertainty: prediction sets (90 %, LAC)"].value.startswith("coverage ")
    assert by_topic["Software and hardware"].source == "env.json"
    person = [i for i in items if i.by_person]
    assert len(person) == len(checklist.PERSON_ITEMS) and all(i.value == checklist.PERSON for i in person)
    md = checklist.to_markdown(items, "run")
    assert md.count("\n| ") == len(items) + 1 and "(a person)" in md


def test_cli_writes_the_checklist_and_the_report_shows_it(tmp_path, capsys):
    from core.cli import main
    from core.evaluation.report import build_report

    run = a_run(tmp_path)
    (run / "model").mkdir()  # a model folder to receive the card (the manifest is not needed for it)
    (run / "model" / "model.json").write_text("{}")
    assert main(["checklist", str(run), "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    text = (run / "report" / "checklist.md").read_text()
    assert "| Results | Failure analysis |" in text and out["filled"] >= 10
    assert out["model_cards"] == [str(run / "model" / "MODEL_CARD.md")]
    assert "## For a person to write" in (run / "model" / "MODEL_CARD.md").read_text()
    build_report(run, tmp_path / "rep", n_resamples=50, png=False)
    assert "Reporting checklist" in (tmp_path / "rep" / "report.html").read_text()
