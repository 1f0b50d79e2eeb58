"""The reporting checklist written from a run: the CLAIM 2024 / TRIPOD+AI topics this app can fill from its own
records, each with its value and the run file it came from, and the topics only a person can fill, marked so.

Topics, not item numbers: the guidelines renumber between versions, so each row names the topic as the guidelines
word it (data source, partitions, preprocessing, ...) and the reader maps it to the version they submit with.
Nothing identifying is written: file and folder names only, patients as counts, sites never.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.base import fmt
from core.evaluation import bytask, calibration, conformal, evaluate, sample_size
from core.runs import rundir

PERSON = "to be filled by a person"


@dataclass(frozen=True)
class Item:
    """One checklist row: the topic, its value, the run file it came from ('' for a person's item)."""

    section: str
    topic: str
    value: str
    source: str = ""

    @property
    def by_person(self) -> bool:
        """True when only a person can fill it."""
        return not self.source


PERSON_ITEMS = (
    ("Title and abstract", "Study design, intended use and users, the clinical question"),
    ("Data", "Where and when the images were collected (sites, dates), and the eligibility criteria"),
    ("Data", "Reference standard: who labelled the images, how, with what experience, and their agreement"),
    ("Data", "Missing data and how it was handled beyond unreadable files"),
    ("Methods", "Sample size rationale (why this many training images; the test-set size line above helps)"),
    ("Ethics", "Ethics approval, consent or waiver, data protection"),
    ("Discussion", "Limitations, generalisability, clinical implications"),
    ("Other", "Code and data availability, funding, conflicts of interest"),
)


def _read(path: Path) -> dict[str, Any]:
    """A JSON file of the run ({} when absent or unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _rounded(values: list[float] | None) -> str:
    """A short list of numbers (3 decimals), or 'none'."""
    return "none" if values is None else "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def _data_items(run: rundir.RunFolder, cfg: dict[str, Any]) -> list[Item]:
    """Source, counts per split and class, patient grouping, exclusions."""
    src, split = cfg.get("source", {}), cfg.get("data", {}).get("split", {})
    where = Path(src.get("csv_path") or src.get("root") or "?").name
    out = [
        Item(
            "Data",
            "Data source",
            f"{src.get('kind', '?')} source '{where}' (file or folder name only)",
            rundir.CONFIG,
        )
    ]
    if run.items.is_file():
        items = run.read_items()
        per = items.groupby(["split", "label"]).size().unstack(fill_value=0)
        counts = "; ".join(
            f"{s}: " + ", ".join(f"{c} {int(n)}" for c, n in row.items()) for s, row in per.iterrows()
        )
        out.append(Item("Data", "Images per split and class", f"{len(items)} images. {counts}", rundir.ITEMS))
        groups = items["group"].fillna("").astype(str) if "group" in items else pd.Series([], dtype=str)
        patients = groups[groups != ""].nunique()
        how = f"{split.get('method', '?')} split" + (
            f", {split['k_folds']}-fold" if split.get("k_folds", 0) >= 2 else ""
        )
        if split.get("method") == "loso":
            how = f"leave one site out: {split.get('k_folds', 0)} sites of '{split.get('site_col', '')}', one model each"
        grouping = (
            f"{patients} patients; images of a patient kept in one split" if patients else "no patient ids"
        )
        out.append(Item("Data", "Partitions and patient grouping", f"{how}; {grouping}", rundir.ITEMS))
    problems = run.path / rundir.PROBLEMS
    if problems.is_file():
        n = len(pd.read_csv(problems))
        out.append(
            Item(
                "Data",
                "Excluded files (unreadable, unusable)",
                f"{n} files, each with a reason",
                rundir.PROBLEMS,
            )
        )
    return out


def _model_items(cfg: dict[str, Any], manifest: dict[str, Any]) -> list[Item]:
    """Preprocessing, augmentation, architecture and starting weights, training schedule."""
    data, train = cfg.get("data", {}), cfg.get("train", {})
    norm = manifest.get("normalize") or {}
    window = data.get("window")
    aug = data.get("aug", {})
    return [
        Item(
            "Methods",
            "Preprocessing",
            f"{data.get('img_size')} px, {data.get('channels')}, resize '{data.get('resize')}', normalisation "
            f"mean {_rounded(norm.get('mean'))} std {_rounded(norm.get('std'))}; DICOM window {window or 'from the file / full range'}",
            rundir.MODEL_MANIFEST,
        ),
        Item(
            "Methods",
            "Augmentation",
            ", ".join(f"{k} {v}" for k, v in aug.items()) if aug.get("enabled") else "none",
            rundir.CONFIG,
        ),
        Item(
            "Methods",
            "Model architecture and starting weights",
            f"{train.get('arch')}; "
            + (
                "ImageNet weights, fine-tuned"
                if train.get("pretrained")
                else "random initialisation (from scratch)"
            )
            + (
                f"; local weights file {Path(train['weights_path']).name}"
                if train.get("weights_path")
                else ""
            ),
            rundir.CONFIG,
        ),
        Item(
            "Methods",
            "Training schedule and hyper-parameters",
            f"{train.get('epochs')} epochs (+{train.get('freeze_epochs')} frozen when fine-tuning), learning rate "
            f"{train.get('lr') or 'the schedule default'}, batch {data.get('batch_size')}, early stopping patience "
            f"{train.get('early_stop_patience')}, loss for imbalance '{train.get('imbalance')}', seed {train.get('seed')}",
            rundir.CONFIG,
        ),
    ]


def _selection_items(summary: dict[str, Any]) -> list[Item]:
    """Which epoch the model is from and what chose it (evaluate.provenance), and a k-fold run's final model."""
    final = summary.get("final_model")
    extra = f" A final model was trained on all the data for {final.get('epochs')} epochs." if final else ""
    if summary.get("test_model"):  # a k-fold run's test split (core.train.kfold_test)
        extra += f" The test set is scored by the {summary['test_model']}"
        ens = (summary.get("metrics") or {}).get("test_ensemble") or {}
        shown = ", ".join(f"{k.replace('_', ' ')} {ens[k]:.3f}" for k in _headline_names(summary) if k in ens)
        extra += f"; the fold ensemble ({summary.get('k')} models averaged) on it: {shown}." if shown else "."
    return [Item("Methods", "Model selection", evaluate.provenance(summary) + extra, rundir.METRICS)]


def _headline_names(summary: dict[str, Any]) -> tuple[str, ...]:
    """The headline metrics of the run's task type (single-label: evaluate.HEADLINE)."""
    from core.evaluation.taskreport import HEADLINES

    return HEADLINES.get(bytask.task_of(summary), evaluate.HEADLINE)


def _headline_set(run_dir: Path) -> tuple[str, pd.DataFrame] | None:
    """(name, labelled rows) of the set a run's headline is measured on: test, else out-of-fold, else validation."""
    frames = evaluate.load_run_predictions(run_dir)
    name = next((n for n in ("test", "oof", "valid") if n in frames), None)
    return None if name is None else (name, evaluate.labelled(frames[name]))


def _task_items(run_dir: Path, summary: dict[str, Any], n_resamples: int) -> list[Item]:
    """A multi-label or ordinal run's headline metrics with patient-level CIs, and why it has no calibration."""
    found, task = _headline_set(run_dir), bytask.task_of(summary)
    none = "temperature scaling and prediction sets are for single-label runs; not applied to this task type"
    out = [Item("Results", "Calibration", none, rundir.METRICS)]
    if found is None:
        return out
    name, df = found
    thresholds = (summary.get("task") or {}).get("thresholds")
    ev = bytask.evaluate_frame(
        df, list(summary["classes"]), task, thresholds=thresholds, n_resamples=n_resamples
    )
    shown = ", ".join(f"{k.replace('_', ' ')} {fmt.with_ci(ev['ci'][k])}" for k in _headline_names(summary))
    file = rundir.RunFolder(run_dir).predictions(name).name
    errors = "per-finding 2x2 tables" if task == "multilabel" else "the grade confusion matrix and cut-points"
    return out + [
        Item("Results", f"Performance with 95 % CIs ({name} set, n = {ev['n']})", shown, file),
        Item("Results", "Failure analysis", f"the top losses and {errors} are in the report", file),
    ]


def _headline_items(run_dir: Path, summary: dict[str, Any], n_resamples: int) -> list[Item]:
    """Headline metrics with CIs on the set they are measured on, and the failure analysis of that set."""
    found = _headline_set(run_dir)
    if found is None:
        return []
    name, df = found
    classes = list(summary["classes"])
    ev = evaluate.evaluate_frame(df, classes, n_resamples=n_resamples)
    shown = ", ".join(
        f"{k.replace('_', ' ')} {fmt.with_ci(v)}" for k, v in ev["ci"].items() if k in evaluate.HEADLINE
    )
    file = rundir.RunFolder(run_dir).predictions(name).name
    wrong = df[df["pred"].astype(str) != df["label"].astype(str)]
    pairs = wrong.groupby(["label", "pred"]).size().sort_values(ascending=False).head(3)
    errors = "; ".join(f"{int(n)} {t} called {p}" for (t, p), n in pairs.items()) or "none"
    headline = "roc_auc" if len(classes) == 2 else "accuracy"
    share = ev["counts"][classes[1]] / max(1, ev["n"]) if len(classes) == 2 else None
    plan = sample_size.plan_text(headline, ev["metrics"][headline], 0.05, ev["n"], share)
    return [
        Item("Methods", "Test-set size for a chosen CI width", plan, file),
        Item("Results", f"Performance with 95 % CIs ({name} set, n = {ev['n']})", shown, file),
        Item(
            "Results",
            "Failure analysis",
            f"{len(wrong)} of {len(df)} wrong; most frequent: {errors}; "
            "the top-loss gallery with Grad-CAM is in the report",
            file,
        ),
    ]


def _defend_items(run_dir: Path, n_resamples: int, cfg_off: bool) -> list[Item]:
    """Calibration before / after and prediction sets at 90 % on the test set."""
    out = []
    cal = calibration.calibration_report(run_dir, n_resamples=n_resamples)
    if cal is None:
        why = (
            "off for this run"
            if cfg_off
            else "not fitted: too few validation predictions, or no errors among them"
        )
        out.append(Item("Results", "Calibration", f"no temperature scaling ({why})", rundir.METRICS))
    else:
        t = cal["temperature"]
        judged = cal["sets"].get("test") or next(iter(cal["sets"].values()), None)
        ece = (
            f"; ECE {fmt.with_ci(judged['ece']['before'])} -> {fmt.with_ci(judged['ece']['after'])}"
            if judged
            else ""
        )
        out.append(
            Item(
                "Results",
                "Calibration",
                f"temperature {t['temperature']:.3f} fitted on {t['n']} {t['fitted_on']} predictions{ece}",
                rundir.METRICS,
            )
        )
    sets = conformal.run_conformal(str(run_dir), conformal.SetRule(0.9), n_resamples=n_resamples)
    if sets is not None and "test" in sets["sets"]:
        s = sets["sets"]["test"]
        out.append(
            Item(
                "Results",
                "Uncertainty: prediction sets (90 %, LAC)",
                f"coverage {fmt.with_ci(s['coverage'])}, "
                f"referred {fmt.with_ci(s['referral_rate'])}, accuracy of the answered "
                f"{fmt.with_ci(s['accuracy_answered'])}",
                rundir.RunFolder(run_dir).predictions("test").name,
            )
        )
    return out


def _other_items(run: rundir.RunFolder) -> list[Item]:
    """External test, software and hardware."""
    ext = run.report_folder(external=True) / rundir.REPORT_METRICS
    env = _read(run.path / rundir.ENV)
    software = ", ".join(f"{k} {env[k]}" for k in ("xray_trainer", "torch", "fastai", "python") if k in env)
    return [
        Item(
            "Results",
            "External test set",
            "evaluated: see report_external/"
            if ext.is_file()
            else "none yet (python -m core evaluate --model <run> ...)",
            rundir.EXTERNAL_REPORT_DIR if ext.is_file() else rundir.METRICS,
        ),
        Item("Methods", "Software and hardware", f"{software}; device {env.get('device', '?')}", rundir.ENV),
    ]


def checklist(run_dir: str | Path, n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES) -> list[Item]:
    """Every topic this app can fill from a finished run, then the ones only a person can fill."""
    run_dir = Path(run_dir)
    run = rundir.RunFolder(run_dir)
    summary = evaluate.run_summary(run_dir)
    cfg = _read(run.config)
    manifest = _read(run.model_manifest) or next(
        (_read(d / rundir.MODEL_MANIFEST) for _, d in run.fold_models()), {}
    )
    items = [
        *_data_items(run, cfg),
        *_model_items(cfg, manifest),
        *_selection_items(summary),
        *(
            _headline_items(run_dir, summary, n_resamples)
            + _defend_items(run_dir, n_resamples, cfg.get("train", {}).get("calibrate") is False)
            if bytask.task_of(summary) == "single"
            else _task_items(run_dir, summary, n_resamples)
        ),
        *_other_items(run),
    ]
    return items + [Item(section, topic, PERSON) for section, topic in PERSON_ITEMS]


def table(items: list[Item]) -> pd.DataFrame:
    """The checklist as a table: section, topic, value, source (a person's items say so)."""
    return pd.DataFrame(
        [
            {"section": i.section, "topic": i.topic, "value": i.value, "source": i.source or "(a person)"}
            for i in items
        ]
    )


def to_markdown(items: list[Item], run_name: str) -> str:
    """The checklist as Markdown (the rows the app filled, then the ones a person must fill)."""

    def esc(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        f"# Reporting checklist: run {run_name}",
        "",
        "Topics of CLAIM 2024 and TRIPOD+AI this app can fill from the run's own files (the source column names "
        "the file); map them to the item numbers of the checklist version you submit with.",
        "",
        "| section | topic | value | source |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {esc(i.section)} | {esc(i.topic)} | {esc(i.value)} | {esc(i.source or '(a person)')} |"
        for i in items
    ]
    return "\n".join(lines) + "\n"


def model_card(items: list[Item], run_name: str, classes: list[str]) -> str:
    """A model card (Markdown) for the saved model folder: intended use left to a person, the rest from the run."""
    facts = "\n".join(f"- **{i.topic}**: {i.value} (`{i.source}`)" for i in items if not i.by_person)
    todo = "\n".join(f"- **{i.topic}**: _{PERSON}_" for i in items if i.by_person)
    return (
        f"# Model card: run {run_name}\n\nClasses: {', '.join(classes)}.\n\n## From the run\n\n{facts}\n\n"
        f"## For a person to write\n\n{todo}\n"
    )
