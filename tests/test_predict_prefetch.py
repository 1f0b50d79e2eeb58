"""Prediction that decodes ahead of the model: same probabilities as the serial fastai path, order, bad files,
bounded batches in flight, and the validation resize in plain PIL equal to fastai's."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.data import prefetch
from core.data.imaging import ImageError
from core.data.resize import valid_resize
from core.evaluation.predict import Predictor, predict_csv, predict_folder
from tests.helpers import wait_for
from tests.test_sources import dcm

SHAPES = [(32, 32), (40, 30), (30, 40), (17, 50), (64, 21), (33, 31), (8, 9), (100, 7)]


@pytest.mark.parametrize("method", ["squish", "pad", "crop"])
def test_valid_resize_is_fastais_validation_resize(method):
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.core import PILImage, PILImageBW

    rng = np.random.default_rng(0)
    tfm = Resize(24, method=getattr(ResizeMethod, method.capitalize()), pad_mode="zeros")
    for w, h in SHAPES:
        for mode, cls in (("L", PILImageBW), ("RGB", PILImage)):
            shape = (h, w) if mode == "L" else (h, w, 3)
            im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
            want = np.asarray(tfm(cls.create(im), split_idx=1))
            assert np.array_equal(np.asarray(valid_resize(im, 24, method)), want), (method, w, h, mode)


def fixed_predictor(resize: str = "pad", channels: str = "rgb", size: int = 20) -> Predictor:
    """A Predictor around a small fixed (seeded) CNN with normalisation, channels_last: no file, no training."""
    from core.data.loaders import ImageReader
    from core.evaluation import tta
    from core.models.savedmodel import Manifest

    torch.manual_seed(0)
    n_in = 1 if channels == "grey" else 3
    pred = Predictor.__new__(Predictor)
    pred.model = torch.nn.Sequential(
        torch.nn.Conv2d(n_in, 8, 3, stride=2),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    ).eval()
    pred.model.to(memory_format=torch.channels_last)
    pred.manifest = Manifest.from_dict({"arch": "x", "classes": ["a", "b", "c"], "resize": resize})
    pred.classes, pred.device, pred.task = ["a", "b", "c"], torch.device("cpu"), "single"
    pred.reader = ImageReader(size, channels, None, 0, use_cache=False)
    pred.mean = torch.tensor([0.4] * n_in).view(1, -1, 1, 1)
    pred.std = torch.tensor([0.2] * n_in).view(1, -1, 1, 1)
    pred.temperature, pred.conformal, pred.set_rule = 1.0, None, None
    pred.tta_views = tta.views(tta.flips_for(pred.manifest.extra))
    return pred


def serial_probs(pred: Predictor, paths: list[str]) -> np.ndarray:
    """Today's serial reference: fastai image + fastai validation Resize + float / 255, one file at a time."""
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.core import PILImage, PILImageBW

    from core.data import decode_cache

    grey = pred.reader.channels == "grey"
    tfm = Resize(
        pred.img_size, method=getattr(ResizeMethod, pred.manifest.resize.capitalize()), pad_mode="zeros"
    )
    out = []
    for p in paths:
        img = decode_cache.downscale(pred.reader.load(p), pred.img_size)
        img = PILImageBW.create(img.convert("L")) if grey else PILImage.create(img.convert("RGB"))
        arr = np.asarray(tfm(img, split_idx=1), dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        out.append(pred.probs(torch.from_numpy(np.ascontiguousarray(arr))[None]))
    return np.concatenate(out)


def mixed_files(root: Path) -> tuple[list[str], set[str]]:
    """Good images of several kinds, sizes and modes, with unreadable files between them: (all paths, bad)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    paths, bad = [], set()
    for i in range(11):
        w, h = SHAPES[i % len(SHAPES)][0] + 5, SHAPES[i % len(SHAPES)][1] + 5
        kind = i % 4
        if kind == 0:
            p = root / f"{i:02d}.jpg"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        elif kind == 1:
            p = root / f"{i:02d}.png"
            Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16)).save(p)  # 16-bit grey
        elif kind == 2:
            p = root / f"{i:02d}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").save(p)
        else:
            p = dcm(root / f"{i:02d}.dcm")
        paths.append(str(p))
        if i % 3 == 1:  # a broken file after every third good one
            broken = root / f"{i:02d}b.png"
            broken.write_bytes(b"not an image at all" if i % 2 else p.read_bytes()[:40])
            paths.append(str(broken))
            bad.add(str(broken))
    paths.append(str(root / "missing.png"))
    return paths, bad | {str(root / "missing.png")}


@pytest.mark.parametrize("resize,channels", [("pad", "rgb"), ("crop", "grey"), ("squish", "rgb")])
def test_prefetched_prediction_equals_the_serial_path_in_order_with_bad_files_reported(
    tmp_path, resize, channels
):
    pred = fixed_predictor(resize, channels)
    paths, bad = mixed_files(tmp_path / "imgs")
    good = [p for p in paths if p not in bad]
    want = serial_probs(pred, good)
    for workers in (0, 1, 3):
        df, problems = pred.predict_paths(paths, batch_size=4, workers=workers)
        assert df["path"].tolist() == good  # input order, bad files left out
        np.testing.assert_allclose(df[["prob_a", "prob_b", "prob_c"]].to_numpy(), want, atol=1e-6)
        assert set(problems["path"]) == bad
        for path, reason in zip(problems["path"], problems["reason"]):  # the same sentence as one file alone
            with pytest.raises(ImageError) as one:
                pred.predict_one(path)
            assert reason == str(one.value) and reason


def test_single_folder_and_csv_prediction_give_the_same_probabilities(tmp_path):
    pred = fixed_predictor("pad", "rgb")
    paths, bad = mixed_files(tmp_path / "data" / "a")
    good = [p for p in paths if p not in bad]
    folder, _ = predict_folder(pred, tmp_path / "data", batch_size=3)
    pd.DataFrame({"path": [Path(p).name for p in good], "label": "a"}).to_csv(
        tmp_path / "data" / "a" / "t.csv"
    )
    table, problems = predict_csv(pred, tmp_path / "data" / "a" / "t.csv", batch_size=5)
    assert problems.empty and table["label"].eq("a").all()
    folder = folder.set_index("path").loc[good]
    for p, row in zip(good, table.itertuples()):
        one = pred.predict_one(p)["probs"]
        assert row.path == p
        assert abs(one["a"] - row.prob_a) < 1e-6 and abs(folder.loc[p, "prob_a"] - row.prob_a) < 1e-6


def test_prefetch_keeps_order_and_bounds_the_batches_in_flight():
    started, lock = [], threading.Lock()

    def load(batch):
        with lock:
            started.append(batch[0])
        return list(batch)

    items = list(range(50))
    for workers, ahead in ((1, 1), (2, 2), (3, 4)):
        started.clear()
        seen = []
        for k, batch in enumerate(prefetch.prefetched(items, load, 4, workers=workers, ahead=ahead)):
            if k == 0:  # the decoders run ahead of a model that holds its batch ...
                wait_for(lambda n=ahead + 1: len(started) >= n)
            time.sleep(0.01)
            with lock:  # ... but never further than `ahead` batches (+ the one held)
                assert len(started) - k <= ahead + 1, (workers, ahead, k, len(started))
            seen += batch
        assert seen == items


def test_prefetch_raises_a_load_error_at_its_batch_and_stops_when_left():
    def load(batch):
        if 8 in batch:
            raise ValueError("boom")
        return batch

    got = []
    with pytest.raises(ValueError, match="boom"):
        for batch in prefetch.prefetched(list(range(20)), load, 4, workers=2, ahead=2):
            got += batch
    assert got == list(range(8))
    calls = []
    gen = prefetch.prefetched(list(range(400)), lambda b: calls.append(b) or b, 4, workers=1, ahead=2)
    next(gen)
    gen.close()  # the consumer stops early: the batches not started are cancelled
    assert len(calls) <= 4
    assert list(prefetch.prefetched([], load, 4, workers=2)) == []


def test_loading_threads_per_core_count(monkeypatch):
    # GPU model: decode threads, one per core up to 4
    for cores, want in ((1, 1), (2, 2), (3, 3), (8, 4), (64, 4)):
        monkeypatch.setattr(prefetch, "usable_cores", lambda n=cores: n)
        assert prefetch.decode_workers() == want, cores
    # CPU model, small batches: threads that decode and run the model (one per core and one more), sharing the
    # torch threads; none on one
    small = 32 * 32 * 32
    for threads, want in ((1, (0, 1)), (2, (3, 1)), (3, (4, 1)), (8, (4, 2)), (64, (4, 16))):
        plan = prefetch.cpu_plan(threads, small)
        assert (plan.workers, plan.torch_threads) == want and plan.run_model, threads
    # as many model threads as their forward passes fit in MODEL_MEMORY_BYTES
    per_batch = 32 * 224 * 224 * prefetch.ACTIVATION_BYTES_PER_PIXEL
    assert prefetch.cpu_plan(8, 32 * 224 * 224).workers == prefetch.MODEL_MEMORY_BYTES // per_batch >= 2
    # room for one forward pass only: decode threads (one per two cores) ahead of one model on every thread
    big = prefetch.cpu_plan(8, 32 * 640 * 640)
    assert (big.workers, big.run_model, big.torch_threads) == (4, False, 8)
    assert prefetch.cpu_plan(2, 32 * 640 * 640) == prefetch.LoadPlan(1, False, 2)


def test_batches_ahead_keep_to_the_memory_budget():
    assert prefetch.batches_ahead(4, 1000) == 5
    assert prefetch.batches_ahead(4, prefetch.PREFETCH_BYTES // 2) == 2
    assert prefetch.batches_ahead(4, prefetch.PREFETCH_BYTES * 3) == 1  # one batch, however large
    with pytest.raises(ValueError):
        list(prefetch.prefetched([1], list, 0))


def test_cpu_model_threads_share_the_torch_threads_and_leave_the_callers_count(tmp_path, monkeypatch):
    pred = fixed_predictor("squish", "rgb")
    paths, bad = mixed_files(tmp_path / "imgs")
    want = serial_probs(pred, [p for p in paths if p not in bad])
    seen, probs = [], pred.probs

    def recording(batch, tta=False):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return probs(batch, tta=tta)

    monkeypatch.setattr(pred, "probs", recording)
    monkeypatch.setattr(prefetch, "usable_cores", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        df, _ = pred.predict_paths(paths, batch_size=4)  # 4 threads: 4 model threads with 1 torch thread each
        np.testing.assert_allclose(df[["prob_a", "prob_b", "prob_c"]].to_numpy(), want, atol=1e-6)
        assert seen and all(name.startswith("load") and n == 1 for name, n in seen), seen
        assert torch.get_num_threads() == 4
        later: list[int] = []  # a thread started afterwards begins with the caller's count, not the workers'
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start(), t.join()
        assert later == [4]
        seen.clear()
        # no room for two forward passes: decode threads, the model in the caller
        with monkeypatch.context() as m:
            m.setattr(prefetch, "MODEL_MEMORY_BYTES", 1)
            df, _ = pred.predict_paths(paths, batch_size=4)
        np.testing.assert_allclose(df[["prob_a", "prob_b", "prob_c"]].to_numpy(), want, atol=1e-6)
        assert seen and all(name == threading.current_thread().name and n == 4 for name, n in seen), seen
        seen.clear()
        torch.set_num_threads(1)  # one thread: every batch decoded and run in the caller
        pred.predict_paths(paths, batch_size=4)
        assert seen and all(name == threading.current_thread().name and n == 1 for name, n in seen)
    finally:
        torch.set_num_threads(before)


def test_cpu_prediction_keeps_the_forward_blocks_in_the_heap_and_hands_them_back(tmp_path, monkeypatch):
    """Each batch asks for blocks of BLOCK_BYTES_PER_PIXEL per batch pixel to be kept; the prediction's end trims."""
    from core.data import imaging

    pred = fixed_predictor("squish", "rgb")
    paths, _bad = mixed_files(tmp_path / "imgs")
    kept: list[int] = []
    trims: list[bool] = []
    monkeypatch.setattr(imaging, "keep_heap_blocks", lambda n: kept.append(n) or n)
    monkeypatch.setattr(imaging, "release_heap", lambda: trims.append(True))
    pred.predict_paths(paths, batch_size=4, workers=0)
    side = pred.img_size
    # one call per batch of good files (1-4 images: the broken ones are left out)
    assert kept and set(kept) <= {prefetch.BLOCK_BYTES_PER_PIXEL * n * side * side for n in range(1, 5)}
    assert trims == [True]
