"""Numbers as people read them: metrics, confidence intervals, mean ± sd, durations, sizes, times.

The one place the UI, the report and the CLI turn numbers into text, so a metric reads the same everywhere.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping
from typing import Any

MISSING = "n/a"


def _finite(x: Any) -> bool:
    """A real number that is not NaN or infinite."""
    return isinstance(x, numbers.Real) and math.isfinite(x)


def number(x: Any, digits: int = 3, missing: str = MISSING) -> str:
    """A metric: "0.912" (fixed decimals); integers as they are; `missing` for None, NaN or infinity."""
    if isinstance(x, numbers.Integral) or not (x is None or isinstance(x, numbers.Real)):
        return str(x)
    return f"{x:.{digits}f}" if _finite(x) else missing


def with_ci(
    ci: Mapping[str, float] | float | None, digits: int = 3, missing: str = MISSING, brackets: str = "()"
) -> str:
    """ "0.912 (0.871-0.948)" from {"value", "lo", "hi"} or a number; the interval only when it is finite.

    brackets="[]" where the text already sits inside parentheses (a figure legend).
    """
    if ci is None:
        return ""
    if not isinstance(ci, Mapping):
        return number(ci, digits, missing)
    value, lo, hi = ci.get("value"), ci.get("lo"), ci.get("hi")
    if not _finite(value) or not (_finite(lo) and _finite(hi)):
        return number(value, digits, missing)
    return f"{number(value, digits)} {brackets[0]}{number(lo, digits)}-{number(hi, digits)}{brackets[1]}"


def mean_sd(mean: Any, sd: Any, digits: int = 3) -> str:
    """ "0.850 ± 0.071" (k-fold summaries)."""
    return f"{number(mean, digits)} ± {number(sd, digits)}"


def seconds(s: float | None) -> str:
    """A duration as '1 h 2 min', '3 min 20 s' or '12 s' ('unknown' when missing or negative)."""
    if s is None or not math.isfinite(s) or s < 0:
        return "unknown"
    n = int(round(s))
    if n >= 3600:
        return f"{n // 3600} h {n % 3600 // 60} min"
    return f"{n // 60} min {n % 60} s" if n >= 60 else f"{n} s"


def megabytes(n: int) -> str:
    """Bytes as whole megabytes (10^6, at least 1) with thousands separators: "2,651 MB"."""
    return f"{max(1, round(n / 1_000_000)):,} MB"


def timestamp(t: float | None) -> str:
    """A Unix time as local date and time ('' when missing)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def fold(i: Any) -> str:
    """A fold as users see it: numbered 1..k (the code and the files count from 0)."""
    return f"fold {int(i) + 1}"


def count(n: int, noun: str) -> str:
    """'1 epoch', '3 epochs': a count with its noun in the singular or plural (an added s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
