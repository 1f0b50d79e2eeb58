"""Batches loaded ahead of their consumer by background threads, in order, with a bounded number in flight.

Prediction on a CPU gives each thread a whole batch: decode it, then run the model on it with a share of the
torch threads (`cpu_plan`: on 2 cores, three threads with one torch thread each). PyTorch releases the GIL
while it computes, so one thread's model runs while another decodes, and a model on one thread per core does
more per core than one model on both (bench_predict.py: 0.73 -> 0.83-1.02 of the model's speed on decoded
tensors on 2 cores); a single thread runs batches in turn (nothing to overlap on one core). With the model
on a GPU, or batches too large for several forward passes at once, the threads only decode (`decode_workers`)
and the model runs in the consumer.
Each task is a whole batch (one future per batch, not per image), so the consumer's loop has no per-image
Python. At most `ahead` batches are loaded or being loaded while the consumer holds one: that bounds the
memory decoded images take.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 4  # loading threads at most (each holds a batch; a CPU model's threads share the cores)
PREFETCH_BYTES = 256 * 2**20  # decoded batches held ahead of the model, at most (at least one batch)
# The forward passes that prediction threads run at once may hold about MODEL_MEMORY_BYTES; a pass's peak is
# estimated per image pixel of its batch (measured at 224 px, channels_last, no grad: resnet18 128, resnet50 250).
MODEL_MEMORY_BYTES = 2**30
ACTIVATION_BYTES_PER_PIXEL = 256
# A forward pass's largest single block per batch pixel: resnet's first block, 64 float channels at half the side,
# is 64 bytes; wider stems (EfficientNet's first expansion) up to about 96. Blocks up to this are kept in the heap.
BLOCK_BYTES_PER_PIXEL = 128


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. `taskset`), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def decode_workers() -> int:
    """Decode threads for a model on a GPU (decoding is then the CPU's whole job): one per core, at most
    MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, usable_cores()))


@dataclass(frozen=True)
class LoadPlan:
    """How prediction loads its batches: `workers` threads (0: the caller, in turn); `run_model`: each thread
    also runs the model on its batch with `torch_threads` torch threads (else the threads only decode, ahead of
    the model in the caller)."""

    workers: int
    run_model: bool
    torch_threads: int


def cpu_plan(threads: int, batch_pixels: int) -> LoadPlan:
    """The plan for a model on the CPU allowed `threads` torch threads, for batches of `batch_pixels` pixels
    (batch size x side x side).

    One thread: the caller decodes and runs each batch in turn (a thread would only add switches, 0.12 ms an
    image at 32 px). More: one model thread per core and one more, at most MAX_WORKERS, sharing the torch
    threads (a model per core measured faster than one model on every core at the sizes the app plans from
    scratch; the extra thread computes while another waits for the GIL behind a decode: 2 cores, 32 px, 1,400 ->
    1,470 images/s), as many as their forward passes' activations fit in MODEL_MEMORY_BYTES; when only one fits
    (large images or batches), one decode thread per two cores works ahead of one model on every thread, in the
    caller.
    """
    if threads < 2:
        return LoadPlan(0, True, 1)
    fit = MODEL_MEMORY_BYTES // max(1, batch_pixels * ACTIVATION_BYTES_PER_PIXEL)
    workers = min(MAX_WORKERS, threads + 1, fit)
    if workers >= 2:
        return LoadPlan(workers, True, max(1, threads // workers))
    return LoadPlan(max(1, min(MAX_WORKERS, threads // 2)), False, threads)


def batches_ahead(workers: int, batch_bytes: int) -> int:
    """Batches to decode ahead: one per worker plus one, but no more than PREFETCH_BYTES hold (at least 1)."""
    return max(1, min(workers + 1, PREFETCH_BYTES // max(1, batch_bytes)))


def prefetched(
    items: Sequence[T],
    load: Callable[[Sequence[T]], R],
    batch_size: int,
    workers: int = 1,
    ahead: int = 2,
    init: Callable[[], object] | None = None,
) -> Iterator[R]:
    """load(batch) for consecutive batches of `items`, in order; `workers` threads run up to `ahead` loads ahead.

    workers=0 loads each batch in the caller's thread when it is asked for (no thread, nothing ahead). `init()`
    runs once in each thread before its first load. An exception of `load` is raised here, at its batch.
    Leaving the loop early cancels the loads not started.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = (items[i : i + batch_size] for i in range(0, len(items), batch_size))
    if workers < 1:
        yield from map(load, chunks)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="load", initializer=init)
    pending: deque[Future[R]] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(load, chunk))
            if len(pending) > max(1, ahead):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
