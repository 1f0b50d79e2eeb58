"""Progress of a long core step as plain calls: `on_step(what, done, total)`. Core functions take it as an
optional `progress` argument and never print; the caller (the CLI) decides how to show it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

OnStep = Callable[[str, int, int], None]  # (what is counted, how many done, how many in all)


def report(progress: OnStep | None, what: str, done: int, total: int) -> None:
    """Tell `progress` (when given) that `done` of `total` `what` are done."""
    if progress is not None:
        progress(what, done, total)


def counted(items: Iterable[T], total: int, progress: OnStep | None, what: str) -> Iterator[T]:
    """Yield the items, reporting after each one (0 first, so a watcher knows the total at once)."""
    report(progress, what, 0, total)
    for done, item in enumerate(items, start=1):
        yield item
        report(progress, what, done, total)
