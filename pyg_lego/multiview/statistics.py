r"""Paired comparisons over seeds and ranks over data sets: the statistics of
the multi-view fusion study."""
import math
from typing import Dict, Mapping, Sequence


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> float:
    r"""Two-sided p-value of the Wilcoxon signed-rank test
    (:func:`scipy.stats.wilcoxon`) that paired results :obj:`a` and
    :obj:`b` (one pair per seed) differ; 1 where every pair is equal (the
    test is undefined there and nothing tells them apart)."""
    if len(a) != len(b):
        raise ValueError(f"paired results need equal lengths, got {len(a)} "
                         f"and {len(b)}")
    if len(a) == 0:
        raise ValueError("paired_wilcoxon needs at least one pair")
    if all(x == y for x, y in zip(a, b)):
        return 1.0
    from scipy.stats import wilcoxon
    return float(wilcoxon(a, b).pvalue)


def mean_ranks(cells: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    r"""Each method's mean rank over cells (cell -> method -> score, higher
    is better; rank 1 is best, ties share their mean rank). A method
    missing from a cell is left out of that cell."""
    totals: Dict[str, list] = {}
    for scores in cells.values():
        ordered = sorted(scores.values(), reverse=True)
        for method, score in scores.items():
            first = ordered.index(score) + 1
            last = len(ordered) - ordered[::-1].index(score)
            totals.setdefault(method, []).append((first + last) / 2)
    return {m: sum(r) / len(r) if r else math.nan
            for m, r in totals.items()}


__all__ = ['paired_wilcoxon', 'mean_ranks']
