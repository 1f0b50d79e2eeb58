"""Class imbalance: when a source's classes are imbalanced enough to say so, and what to try."""

from __future__ import annotations

from collections.abc import Mapping

IMBALANCE_RATIO = 3.0  # the largest class has at least this many times the images of the smallest


def imbalance(counts: Mapping[str, int]) -> tuple[str, str, float] | None:
    """(largest class, smallest class, ratio) when the classes are imbalanced, else None."""
    present = {c: int(n) for c, n in counts.items() if int(n) > 0}
    if len(present) < 2:
        return None
    big, small = max(present, key=present.__getitem__), min(present, key=present.__getitem__)
    ratio = present[big] / present[small]
    return (big, small, ratio) if ratio >= IMBALANCE_RATIO else None


def imbalance_note(counts: Mapping[str, int]) -> str | None:
    """A plain sentence about imbalanced classes and what it means for the numbers, or None."""
    found = imbalance(counts)
    if found is None:
        return None
    big, small, ratio = found
    return (
        f"The classes are imbalanced: '{big}' has {counts[big]} images, '{small}' {counts[small]} "
        f"({ratio:.1f} : 1). Accuracy then flatters a model that favours '{big}': read balanced accuracy and "
        "each class's recall, and consider class weighting (Training setup: Class imbalance)."
    )


def weighting_hint(counts: Mapping[str, int], setting: str) -> str | None:
    """With imbalanced classes and no class weighting chosen (`setting` "none"), a hint to choose one."""
    found = imbalance(counts)
    if found is None or setting != "none":
        return None
    big, small, ratio = found
    return (
        f"'{big}' has {ratio:.1f} times the images of '{small}' and Class imbalance is None: a model may then "
        f"call nearly everything '{big}'. Weighted loss or Oversample rare classes usually helps."
    )
