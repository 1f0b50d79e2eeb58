"""The ordinal heads on planted logits (issue 25): CORN's label conditioning, its conditional-to-cumulative product
and its decoding checked against the paper's formulas, a CORN layer fitted to grades that decide it, and the grade
order kept by the target block (fastai's CategoryBlock sorts its vocab unless told not to)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.data.loaders import target_block
from core.models import heads
from core.train.losses import CornLoss


def _reference_corn_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Shi, Cao & Raschka 2023, eq. 5, item by item: task k sees the items with y >= k, target y > k."""
    terms = []
    for i in range(len(y)):
        for k in range(logits.shape[1]):
            if int(y[i]) >= k:
                p = torch.sigmoid(logits[i, k])
                terms.append(-torch.log(p) if int(y[i]) > k else -torch.log(1 - p))
    return torch.stack(terms).mean()


def test_corn_loss_is_the_papers_conditional_loss():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 4, generator=gen) * 3
    y = torch.arange(40) % 5
    assert torch.isclose(CornLoss()(logits, y), _reference_corn_loss(logits, y), atol=1e-5)
    # grade 0 only trains task 0; the other tasks' logits of a grade-0 item do not move the loss
    moved = logits.clone()
    moved[y == 0, 1:] += 7.0
    assert torch.isclose(CornLoss()(moved, y), CornLoss()(logits, y), atol=1e-6)


def test_corn_probabilities_are_the_product_of_the_conditionals():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-0.3, 4.0, 1.0, 0.0]])
    s = torch.sigmoid(logits)
    expected = torch.stack(
        [
            1 - s[:, 0],
            s[:, 0] * (1 - s[:, 1]),
            s[:, 0] * s[:, 1] * (1 - s[:, 2]),
            s[:, 0] * s[:, 1] * s[:, 2] * (1 - s[:, 3]),
            s[:, 0] * s[:, 1] * s[:, 2] * s[:, 3],
        ],
        dim=1,
    )
    probs = heads.corn_probs(logits)
    assert torch.allclose(probs, expected, atol=1e-6)
    above = heads.exceed_probs(probs.numpy())  # P(grade > k) for k = 0..3: the running product
    assert np.allclose(above, torch.cumprod(s, 1).numpy(), atol=1e-6)
    # coral-pytorch's corn_label_from_logits: how many running products exceed 0.5
    rank = (torch.cumprod(s, 1) > 0.5).sum(1).numpy()
    assert heads.predicted_grade(probs.numpy()).tolist() == rank.tolist() == [1, 0]


def test_a_corn_layer_fitted_to_separable_grades_predicts_them():
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(100) % 5
    x = (y.float() + 0.15 * torch.randn(100, generator=gen)).unsqueeze(1)  # one feature decides the grade
    layer = torch.nn.Linear(1, 4)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(layer.parameters(), lr=0.3)
    for _ in range(150):
        opt.zero_grad()
        CornLoss()(layer(x), y).backward()
        opt.step()
    pred = heads.predicted_grade(heads.corn_probs(layer(x).detach()).numpy())
    assert (pred == y.numpy()).mean() >= 0.97


def test_the_target_block_keeps_the_grade_order():
    order = ["none", "mild", "moderate", "severe"]
    block, _ = target_block(order, "ordinal")
    assert list(block.type_tfms[0].vocab) == order
    ten = [str(i) for i in range(11)]  # 0..10: a string sort would put 10 after 1
    assert list(target_block(ten, "ordinal")[0].type_tfms[0].vocab) == ten
    assert list(target_block(["b", "a"], "single")[0].type_tfms[0].vocab) == [
        "a",
        "b",
    ]  # single: sorted, as before


def test_the_cross_entropy_head_gives_softmax_grades():
    logits = torch.tensor([[0.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    assert heads.n_outputs("ordinal", 3, "ce") == 3 and heads.n_outputs("ordinal", 3, "corn") == 2
    assert torch.allclose(heads.activation("ordinal", logits, "ce"), F.softmax(logits, 1))


def test_a_cross_entropy_ordinal_run_keeps_a_named_order_and_predict_gives_its_probabilities(tmp_path):
    """Grades named out of alphabetical order, the ce head: the run, its manifest and Predict agree on both."""
    import json

    import pandas as pd

    from core.base.config import RunConfig, SourceConfig
    from core.data import sample_tasks
    from core.evaluation.predict import Predictor
    from core.runs.progress import Progress
    from core.train.run import train_run

    root = sample_tasks.ensure_ordinal_sample(tmp_path / "od", n=50, size=32)
    order = ["none", "doubtful", "minimal", "moderate", "severe"]  # sorted would be doubtful, minimal, ...
    table = pd.read_csv(root / sample_tasks.GRADES_CSV)
    table["grade"] = table["grade"].map(dict(zip(sample_tasks.GRADES, order)))
    table.to_csv(tmp_path / "named.csv", index=False)
    cfg = RunConfig(
        source=SourceConfig(
            kind="csv",
            csv_path=str(tmp_path / "named.csv"),
            root=str(root),
            label_col="grade",
            group_col="patient_id",
        )
    )
    cfg.train.pretrained, cfg.train.epochs, cfg.train.arch = False, 1, "resnet18"
    cfg.data.img_size, cfg.data.batch_size, cfg.data.split.method = 32, 16, "group"
    cfg.data.task.type, cfg.data.task.order, cfg.data.task.ordinal_head = "ordinal", order, "ce"
    summary = train_run(cfg.validate(), tmp_path / "run", Progress(tmp_path / "run"))
    assert summary["classes"] == order and summary["task"] == {
        "type": "ordinal",
        "order": order,
        "head": "ce",
    }
    assert json.loads((tmp_path / "run/model/model.json").read_text())["task"]["head"] == "ce"
    valid = pd.read_csv(tmp_path / "run/valid_predictions.csv")
    pred = Predictor(tmp_path / "run/model", channels_last=False)
    assert pred.model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)  # K outputs, not CORN's K-1
    out, _ = pred.predict_paths(list(valid["path"]))
    cols = [f"prob_{g}" for g in order]
    assert np.allclose(out[cols].to_numpy(float), valid[cols].to_numpy(float), atol=1e-4)
    assert (out["pred"].to_numpy() == valid["pred"].to_numpy()).all()
