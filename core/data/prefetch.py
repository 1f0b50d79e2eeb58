"""Batches decoded ahead of their consumer by background threads, in order, with a bounded number in flight.

Prediction decodes files while the model runs on the batch before: PIL's and pydicom's decoders, resizing and
numpy copies release the GIL, so a decode thread and PyTorch's own threads work at the same time on several
cores (on a single core there is nothing to overlap but file reads: `decode_workers` gives 0 threads there and
batches are decoded in turn with the model's). Each task decodes a whole batch (one future per batch, not per
image), so the consumer's loop has no per-image Python. At most `ahead` batches are decoded or
being decoded while the consumer holds one: that bounds the memory decoded images take.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 4  # decode threads at most: beyond that the model, not decoding, is the limit on a CPU
PREFETCH_BYTES = 256 * 2**20  # decoded batches held ahead of the model, at most (at least one batch)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. `taskset`), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def decode_workers(model_on_cpu: bool = True) -> int:
    """Decode threads for this process, at most MAX_WORKERS. With the model on the CPU its own threads use every
    core and decoding is the smaller share of the work: one thread per two cores, and none on a single core,
    where a thread cannot add CPU and its switches with the model's thread cost CPU time (0.12 ms an image,
    8 % at 32 px, bench_predict.py); the batches are then decoded between the model's. With the model on a GPU
    decoding is the CPU's whole job: one thread per core."""
    cores = usable_cores()
    if model_on_cpu:
        return min(MAX_WORKERS, cores // 2)
    return max(1, min(MAX_WORKERS, cores))


def batches_ahead(workers: int, batch_bytes: int) -> int:
    """Batches to decode ahead: one per worker plus one, but no more than PREFETCH_BYTES hold (at least 1)."""
    return max(1, min(workers + 1, PREFETCH_BYTES // max(1, batch_bytes)))


def prefetched(
    items: Sequence[T],
    load: Callable[[Sequence[T]], R],
    batch_size: int,
    workers: int = 1,
    ahead: int = 2,
) -> Iterator[R]:
    """load(batch) for consecutive batches of `items`, in order; `workers` threads run up to `ahead` loads ahead.

    workers=0 loads each batch in the caller's thread when it is asked for (no thread, nothing ahead). An
    exception of `load` is raised here, at its batch. Leaving the loop early cancels the loads not started.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = (items[i : i + batch_size] for i in range(0, len(items), batch_size))
    if workers < 1:
        yield from map(load, chunks)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
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
