"""Paired timing, shared by the benchmarks that time contenders in turn: each round runs every
contender once, in an order rotated by one each round, so that a slow moment of the machine hits
all of them alike and none always runs first; results are compared round by round."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def rotation(names: Sequence[str], round_no: int) -> list[str]:
    """The order in which round `round_no` (from 0) runs the contenders."""
    k = round_no % len(names)
    return [*names[k:], *names[:k]]


def median_ratio(times: Sequence[float], base: Sequence[float]) -> float:
    """The median of the per-round ratios times / base (1.03 = 3 % slower than base)."""
    return statistics.median(a / b for a, b in zip(times, base, strict=True))
