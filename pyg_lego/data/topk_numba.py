r"""The top-k of score blocks on the CPU with a compiled loop (optional:
numba), for the exact kNN search (:func:`~pyg_lego.data.exact_knn`).

Each row is read once in groups of 16 scores, whose maxima the compiler
computes with vector instructions. The least of the largest maxima of
:math:`k` disjoint runs of groups is a lower bound of the row's
:math:`k`-th largest score (each run holds a score at least that large),
so only the groups whose maximum reaches it, and exceeds the :math:`k`-th
largest score found so far, are read again, score by score, into a sorted
buffer of :math:`k` that takes no score below the bound. On the
benchmark's views (:math:`k = 16`, 3 views of width 128, one process,
best of 3, two rounds), the exact search with this selection (its blocks
on two threads, see :func:`~pyg_lego.data.knn._search_compiled`) took 62
to 64 ms against 89 to 115 ms with torch's top-k at :math:`N = 4000`, 193
to 196 ms against 362 to 364 ms at 8000 and 796 to 799 ms against 1137 to
1540 ms at 16,000. The selection alone, on one thread, took 0.68, 0.48
and 0.39 ns per score at these sizes, and 0.91, 0.58 and 0.40 ns while
the buffer still took scores below the bound (best of 7).
"""
import numpy as np

from pyg_lego import numba_runtime

# Imported only where numba is installed (see exact_knn).
numba = numba_runtime.numba()


# Written out, not a loop over j: a pairwise tree of independent maxima
# vectorises, where one running maximum is a chain of dependent ones
# (0.18 against 1.1 ns per score on one thread, one-off runs).
@numba.njit(inline='always', cache=True)
def _group_max(row, b):
    m0 = max(row[b], row[b + 1])
    m1 = max(row[b + 2], row[b + 3])
    m2 = max(row[b + 4], row[b + 5])
    m3 = max(row[b + 6], row[b + 7])
    m4 = max(row[b + 8], row[b + 9])
    m5 = max(row[b + 10], row[b + 11])
    m6 = max(row[b + 12], row[b + 13])
    m7 = max(row[b + 14], row[b + 15])
    return max(max(max(m0, m1), max(m2, m3)),
               max(max(m4, m5), max(m6, m7)))


@numba.njit(inline='always', cache=True)
def _insert(value, index, k, x, j):
    # Into the row's buffer, sorted in decreasing order; a tie keeps
    # the earlier column first. Returns the new k-th largest.
    t = k - 1
    while t > 0 and value[t - 1] < x:
        value[t] = value[t - 1]
        index[t] = index[t - 1]
        t -= 1
    value[t] = x
    index[t] = j
    return value[k - 1]


# Unsigned positions: numba then indexes without its check for
# negative indices. Fast-math without NaNs lets the maxima use vector
# instructions (the features were checked finite); not without
# infinities, since each row's own column and the empty buffer are -inf.
@numba.njit(nogil=True, cache=True,
            fastmath={'nnan', 'nsz', 'arcp', 'contract', 'afn', 'reassoc'})
def _select(scores, k, index, value):
    rows, n = scores.shape
    groups = n // 16
    full = np.uint64(groups * 16)
    gmax = np.empty(groups, scores.dtype)
    for r in range(rows):
        row = scores[r]
        for c in range(np.uint64(groups)):
            gmax[c] = _group_max(row, c * np.uint64(16))
        low = -np.inf
        if groups >= k:
            per = groups // k
            low = np.inf
            for t in range(k):
                m = gmax[t * per]
                for c in range(t * per + 1, (t + 1) * per):
                    m = max(m, gmax[c])
                low = min(low, m)
        out, idx = value[r], index[r]
        for t in range(k):
            out[t] = -np.inf
            idx[t] = 0
        kth = -np.inf
        for c in range(np.uint64(groups)):
            if gmax[c] >= low and gmax[c] > kth:
                for j in range(c * np.uint64(16),
                               (c + np.uint64(1)) * np.uint64(16)):
                    x = row[j]
                    # Below the bound, no score can be among the k
                    # largest: the buffer fills with candidates only.
                    if x > kth and x >= low:
                        kth = _insert(out, idx, k, x, j)
        for j in range(full, np.uint64(n)):
            x = row[j]
            if x > kth:
                kth = _insert(out, idx, k, x, j)


def select_topk(scores: np.ndarray, k: int, index: np.ndarray,
                value: np.ndarray) -> None:
    r"""The :obj:`k` largest entries of every row of :obj:`scores`
    (C-contiguous, float32 or float64, finite or :math:`-\infty`), in
    decreasing order: their columns into :obj:`index` (int64) and their
    values into :obj:`value`, both :math:`(\text{rows}, k)`. Runs on the
    calling thread (the GIL released), so that threads can each run
    their own block."""
    _select(scores, k, index, value)


def load(dtype: np.dtype) -> None:
    r"""Compiles (or loads from numba's cache) the loop for scores of
    :obj:`dtype`, on the calling thread, before threads call
    :func:`select_topk`."""
    numba_runtime.call(_select, np.zeros((1, 2), dtype), 1,
                       np.empty((1, 1), np.int64), np.empty((1, 1), dtype))
