r"""The masked power on the CPU with compiled loops (optional: numba).

Without a path index, every order is one pass over the rows of the
pattern. Row :math:`i` marks where each of its neighbours :math:`j` sits
among its edges (a per-thread array of :math:`N` edge ids, reset after
the row), then walks :math:`i \to l \to j` over the neighbours :math:`l`
of :math:`i` and the neighbours :math:`j` of :math:`l`; a marked
:math:`j` closes the path. Nothing is stored: memory stays
:math:`O(|\mathcal{E}| M P)` plus the markers, and all :math:`M` views
share each walk. The backward pass runs two such passes per order, each
writing to one row's edges only, so the threads never write to the same
place.

Where the paths fit the memory budget (or are given, or cached), two
walks store them (:meth:`StoredPaths.enumerate`: a count, then a fill),
2 bytes per path in rows of up to 256 edges, and every pass after that
reads them instead (:func:`_path_kernels`): one far row per path, where
the walk examines every candidate :math:`l \to j` of the row. At 64,000
nodes (30M paths) the enumeration plus the stored forward and backward of
:class:`NumbaMaskedPower` (:math:`P = 3`, relabelling included) took
0.94 s against 1.88 s for the walks alone, and 0.36 s once the paths are
cached; with the paths stored as edge ids grouped by closing edge, 16
bytes per path, 1.64 s and 0.41 s (one process, a one-off run).
"""
from functools import cached_property, lru_cache
from types import SimpleNamespace
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from pyg_lego import numba_runtime
from pyg_lego.data.similarity import CSRPattern, csr_rowptr, id_dtype
from pyg_lego.nn import locality
from pyg_lego.numba_runtime import available  # noqa: F401 (this module's API)

_call = numba_runtime.call


@lru_cache(maxsize=None)
def _kernels(prefetch: bool = True):
    numba = numba_runtime.numba()
    hint = numba_runtime.prefetch() if prefetch else None
    if hint is None:  # not asked for, or numba cannot compile it
        @numba.njit(inline='always')
        def hint(array, i):
            pass

    @numba.njit(inline='always')
    def forward_step(out, src, weight, e, e1, e2):
        for m in range(out.shape[1]):
            out[e, m] += src[e1, m] * weight[e2, m]

    @numba.njit(inline='always')
    def carry_step(out, grad, weight, e, e1, e2):
        for m in range(out.shape[1]):
            out[e1, m] += grad[e, m] * weight[e2, m]

    @numba.njit(inline='always')
    def count_step(count, _, __, e, e1, e2):
        count[e] += 1

    @numba.njit(inline='always')
    def fill_step(cursor, first, second, e, e1, e2):
        q = cursor[e]
        first[q] = e1
        second[q] = e2
        cursor[e] = q + 1

    def walk(step):
        r"""A pass over the paths ``i -> l -> j`` closed by ``(i, j)``, by
        rows ``i``, calling :obj:`step` with the ids ``e`` of ``(i, j)``,
        ``e1`` of ``(i, l)`` and ``e2`` of ``(l, j)`` (numba compiles the
        step into the loop). A step may write to the edges of row ``i``
        only: those are the edges ``e`` and ``e1``. The row of the neighbour
        :obj:`WALK_AHEAD` places on is prefetched: its column ids and its
        entries of :obj:`weight` (an edge-indexed array in every pass)."""
        @numba.njit(parallel=True, cache=False, nogil=True)
        def walk_pass(rowptr, col, src, weight, out, num_nodes, num_chunks):
            n = rowptr.size - 1
            for c in numba.prange(num_chunks):
                marker = np.full(num_nodes, -1, rowptr.dtype)
                for i in range(c * n // num_chunks,
                               (c + 1) * n // num_chunks):
                    for e in range(rowptr[i], rowptr[i + 1]):
                        marker[col[e]] = e
                    for e1 in range(rowptr[i], rowptr[i + 1]):
                        l = col[e1]
                        if e1 + WALK_AHEAD < rowptr[i + 1]:
                            ahead = rowptr[col[e1 + WALK_AHEAD]]
                            hint(col, ahead)
                            hint(weight, ahead)
                        for e2 in range(rowptr[l], rowptr[l + 1]):
                            e = marker[col[e2]]
                            if e >= 0:
                                step(out, src, weight, e, e1, e2)
                    for e in range(rowptr[i], rowptr[i + 1]):
                        marker[col[e]] = -1
        return walk_pass

    # out[(i, j)] += src[(i, l)] * weight[(l, j)]: one order of the power.
    row_pass = walk(forward_step)
    # out[(i, l)] += grad[(i, j)] * weight[(l, j)]: the gradient that order
    # p passes to order p - 1.
    carry_pass = walk(carry_step)
    # The path index: the number of paths closed by each edge, then the
    # paths themselves, in closing-edge order (first-edge order within).
    count_pass = walk(count_step)
    fill_pass = walk(fill_step)

    # The paths grouped by first edge (StoredPaths): the walk of walk() with
    # the count in a register and the fill in order; through walk's step
    # (a counter and a cursor in memory) both took 0.54 s, not 0.36 s, at
    # N = 64,000 (one process).
    @numba.njit(parallel=True, cache=False, nogil=True)
    def count_by_first(rowptr, col, count, num_nodes, num_chunks):
        r"""``count[(i, l)]``: the number of paths ``i -> l -> j`` whose
        first edge is ``(i, l)``, by the walk of :obj:`walk`."""
        n = rowptr.size - 1
        for c in numba.prange(num_chunks):
            marker = np.full(num_nodes, -1, rowptr.dtype)
            for i in range(c * n // num_chunks, (c + 1) * n // num_chunks):
                for e in range(rowptr[i], rowptr[i + 1]):
                    marker[col[e]] = e
                for e1 in range(rowptr[i], rowptr[i + 1]):
                    l = col[e1]
                    if e1 + WALK_AHEAD < rowptr[i + 1]:
                        hint(col, rowptr[col[e1 + WALK_AHEAD]])
                    found = 0
                    for e2 in range(rowptr[l], rowptr[l + 1]):
                        if marker[col[e2]] >= 0:
                            found += 1
                    count[e1] = found
                for e in range(rowptr[i], rowptr[i + 1]):
                    marker[col[e]] = -1

    @numba.njit(parallel=True, cache=False, nogil=True)
    def fill_by_first(rowptr, col, ptr, pairs, num_nodes, num_chunks):
        r"""The paths of :obj:`count_by_first` at :obj:`ptr`, in the order
        of ``j``: the positions of their closing edge ``(i, j)`` in row
        ``i`` and of their second edge ``(l, j)`` in row ``l``."""
        n = rowptr.size - 1
        for c in numba.prange(num_chunks):
            marker = np.full(num_nodes, -1, rowptr.dtype)
            for i in range(c * n // num_chunks, (c + 1) * n // num_chunks):
                for e in range(rowptr[i], rowptr[i + 1]):
                    marker[col[e]] = e - rowptr[i]
                for e1 in range(rowptr[i], rowptr[i + 1]):
                    l = col[e1]
                    if e1 + WALK_AHEAD < rowptr[i + 1]:
                        hint(col, rowptr[col[e1 + WALK_AHEAD]])
                    q = ptr[e1]
                    for e2 in range(rowptr[l], rowptr[l + 1]):
                        at = marker[col[e2]]
                        if at >= 0:
                            pairs[q, 0] = at
                            pairs[q, 1] = e2 - rowptr[l]
                            q += 1
                for e in range(rowptr[i], rowptr[i + 1]):
                    marker[col[e]] = -1

    @numba.njit(parallel=True, cache=False, nogil=True)
    def locate_paths(paths, rank, rowptr, row, col, first, closing, second):
        r"""Paths given as input edge ids (columns of :obj:`paths`: first,
        second, closing) -> the first edge's id in the pattern and the
        positions of the closing and second edges in their rows; returns
        the number of columns that are no path ``i -> l -> j`` of the
        pattern (their outputs are left unset)."""
        num_edges = col.size
        bad = 0
        for q in numba.prange(paths.shape[1]):
            f, s, e = paths[0, q], paths[1, q], paths[2, q]
            if min(f, s, e) < 0 or max(f, s, e) >= num_edges:
                bad += 1
                continue
            if rank.size > 0:
                f, s, e = rank[f], rank[s], rank[e]
            i, l = row[f], col[f]
            if row[e] != i or row[s] != l or col[s] != col[e]:
                bad += 1
                continue
            first[q] = f
            closing[q] = e - rowptr[i]
            second[q] = s - rowptr[l]
        return bad

    @numba.njit(cache=False, nogil=True)
    def group_by_first(first, closing, second, ptr, pairs):
        r"""Paths given by their first edge and the positions of their
        closing and second edges, regrouped by first edge into
        :obj:`pairs` (a counting sort, stable; :obj:`ptr` is given)."""
        cursor = ptr[:-1].copy()
        for q in range(first.size):
            r = cursor[first[q]]
            pairs[r, 0] = closing[q]
            pairs[r, 1] = second[q]
            cursor[first[q]] = r + 1

    @numba.njit(parallel=True, cache=False, nogil=True)
    def weight_pass(rowptr, col, t_rowptr, t_src, t_edge, grad, prev, out,
                    num_nodes, num_chunks):
        r"""``out[(l, j)] += grad[(i, j)] * prev[(i, l)]`` over the same
        paths, by rows ``l``: the in-edges ``(i, l)`` of ``l`` come from the
        transposed pattern (``t_*``), and ``l`` marks its own edges."""
        n = rowptr.size - 1
        views = grad.shape[1]
        for c in numba.prange(num_chunks):
            marker = np.full(num_nodes, -1, rowptr.dtype)
            for l in range(c * n // num_chunks, (c + 1) * n // num_chunks):
                for e in range(rowptr[l], rowptr[l + 1]):
                    marker[col[e]] = e
                for t in range(t_rowptr[l], t_rowptr[l + 1]):
                    i = t_src[t]
                    e1 = t_edge[t]
                    if t + WALK_AHEAD < t_rowptr[l + 1]:
                        ahead = rowptr[t_src[t + WALK_AHEAD]]
                        hint(col, ahead)
                        hint(grad, ahead)
                    for e in range(rowptr[i], rowptr[i + 1]):
                        e2 = marker[col[e]]
                        if e2 >= 0:
                            for m in range(views):
                                out[e2, m] += grad[e, m] * prev[e1, m]
                for e in range(rowptr[l], rowptr[l + 1]):
                    marker[col[e]] = -1

    @numba.njit(parallel=True, cache=False, nogil=True)
    def gather_edges(src, index, out):
        r"""``out[e] = src[index[e]]``: edge values moved between the input
        and the kernels' edge order."""
        for e in numba.prange(index.size):
            if e + PREFETCH_DISTANCE < index.size:
                hint(src, index[e + PREFETCH_DISTANCE])
            s = index[e]
            for m in range(src.shape[1]):
                out[e, m] = src[s, m]

    return SimpleNamespace(row=row_pass, carry=carry_pass, weight=weight_pass,
                           gather=gather_edges, count=count_pass,
                           fill=fill_pass, count_by_first=count_by_first,
                           fill_by_first=fill_by_first,
                           locate=locate_paths,
                           group_by_first=group_by_first)


#: Neighbours ahead of the one being walked whose rows the walks prefetch
#: (:func:`_kernels`). ``benchmarks/prefetch.py`` at N = 64,000: the forward,
#: carry and weight walks took 0.98, 0.98 and 1.02x their time without the
#: hint (0.92 to 0.95x in the run before).
WALK_AHEAD = 2
#: Edges ahead of the one being read whose rows the gather between edge
#: orders prefetches (:func:`_kernels`): 0.90x its time without the hint at
#: N = 64,000 with unsigned maps (0.56x with signed ones, the run before).
PREFETCH_DISTANCE = 64
#: First edges ahead of the one whose paths are summed whose far rows the
#: stored-path passes prefetch (:func:`_path_kernels`).
#: ``benchmarks/prefetch.py``: the weight gradient took 0.75x its time
#: without the hint at N = 64,000 (0.87x at 16,000); the forward and carry
#: passes 0.91 to 1.06x. One-off runs at 64,000 found 1 to 8 ahead alike;
#: rerun the benchmark with ``--path-ahead`` to tune it.
PATH_AHEAD = 2


@lru_cache(maxsize=None)
def _path_kernels(views: int, prefetch: bool = True):
    r"""The passes over a :class:`StoredPaths` index, for :obj:`views`
    columns. Each reads the paths ``i -> l -> j`` first edge ``(i, l)`` by
    first edge, as the positions of ``j`` in rows ``i`` and ``l``: one row
    pointer read per first edge instead of two edge ids per path, and the
    rows a path touches are one row of the pass's own and one far row.
    The source is generated per width because numba cannot unroll a loop
    of run-time length (per-view values in registers). The row offsets
    are unsigned, so that numba indexes without its check for negative
    indices: the passes ran 1.2 to 1.4x faster at N = 64,000 (one-off
    runs before and after).

    * ``forward``: ``out[(i, j)] += src[(i, l)] * weight[(l, j)]``, rows
      ``i`` (one order);
    * ``carry``: ``out[(i, l)] += grad[(i, j)] * weight[(l, j)]``, rows
      ``i`` (the gradient that an order passes to the one before), summed
      in registers per first edge;
    * ``weight``: ``out[(l, j)] += grad[(i, j)] * prev[(i, l)]``, rows
      ``l`` (the gradient of the weights), reading the first edges
      ``(i, l)`` that end in ``l`` from the transposed pattern.

    Each pass writes to the edges of the rows it loops over only, so
    chunks of rows write apart. The far rows (``l``'s in ``forward`` and
    ``carry``, ``i``'s and the paths of ``(i, l)`` in ``weight``) are
    prefetched :obj:`PATH_AHEAD` first edges ahead, where :obj:`prefetch`
    is set and numba can compile the hint
    (:func:`pyg_lego.numba_runtime.prefetch`).
    """
    numba = numba_runtime.numba()
    hint = numba_runtime.prefetch() if prefetch else None
    acc = range(views)

    def compile(name, lines):
        scope = {'numba': numba, 'prefetch': hint, 'A': PATH_AHEAD,
                 'U': np.uint64}
        exec('\n'.join(lines), scope)
        return numba.njit(parallel=True, nogil=True)(scope[name])

    def ahead(indent, limit, *rows):
        if hint is None:
            return []
        return [f'{indent}if {limit}:',
                *[f'{indent}    prefetch({array}, {at})'
                  for array, at in rows]]

    def by_first_edge(name, first, last):
        # Rows i of a chunk, their first edges f = (i, l), and the paths of
        # f: closing edge e = (i, j), second edge s = (l, j).
        return [
            f'def {name}(rowptr, col, ptr, pairs, x, y, out,',
            '        num_chunks):',
            '    n = rowptr.size - 1',
            '    for c in numba.prange(num_chunks):',
            '        for i in range(c * n // num_chunks,',
            '                       (c + 1) * n // num_chunks):',
            '            near = U(rowptr[i])',
            '            for f in range(rowptr[i], rowptr[i + 1]):',
            *ahead(' ' * 16, 'f + A < col.size',
                   ('y', 'rowptr[col[f + A]]')),
            '                far = U(rowptr[col[f]])',
            *first,
            '                for q in range(U(ptr[f]), U(ptr[f + 1])):',
            '                    e = near + pairs[q, 0]',
            '                    s = far + pairs[q, 1]',
            *last]

    forward = compile('forward', by_first_edge(
        'forward', [f'                x{m} = x[f, {m}]' for m in acc],
        [f'                    out[e, {m}] += x{m} * y[s, {m}]'
         for m in acc]))
    carry = compile('carry', by_first_edge(
        'carry', [f'                a{m} = out[f, {m}]' for m in acc],
        [f'                    a{m} += x[e, {m}] * y[s, {m}]' for m in acc]
        + [f'                out[f, {m}] = a{m}' for m in acc]))
    weight = compile('weight', [
        'def weight(rowptr, t_rowptr, t_src, t_edge, t_start, t_stop, pairs,',
        '           grad, prev, out, num_chunks):',
        '    n = rowptr.size - 1',
        '    for c in numba.prange(num_chunks):',
        '        for l in range(c * n // num_chunks,',
        '                       (c + 1) * n // num_chunks):',
        '            near = U(rowptr[l])',
        '            end = t_rowptr[l + 1]',
        '            for t in range(t_rowptr[l], end):',
        *ahead(' ' * 16, 't + A < end',
               ('grad', 'rowptr[t_src[t + A]]'),
               ('pairs', 't_start[t + A]'), ('prev', 't_edge[t + A]')),
        '                f = t_edge[t]',
        '                far = U(rowptr[t_src[t]])',
        *[f'                p{m} = prev[f, {m}]' for m in acc],
        '                for q in range(U(t_start[t]), U(t_stop[t])):',
        '                    e = far + pairs[q, 0]',
        '                    s = near + pairs[q, 1]',
        *[f'                    out[s, {m}] += grad[e, {m}] * p{m}'
          for m in acc]])
    return forward, carry, weight


class Pattern:
    r"""The CSR pattern of a coalesced :obj:`edge_index` and its transpose,
    as the kernels read them (NumPy views of CPU tensors, 32-bit ids where
    they fit).

    With :obj:`reorder` (by default: a pattern of
    :obj:`~pyg_lego.nn.locality.RELABEL_MIN_EDGES` edges or more) it is
    relabelled first (:class:`~pyg_lego.nn.locality.Relabel`), so that the
    rows a walk visits lie close together in memory: nodes numbered at
    random (as a kNN graph's are) put every step of a walk in another
    cache line. The relabelling pays only where it is reused:
    :class:`~pyg_lego.GraphPowerConv` asks for it with :obj:`cached` only
    (``benchmarks/results/switches.md``: 1.31x relabelled once, 0.58x
    relabelled per call). The kernels then run on the relabelled edges;
    :attr:`edge_perm` (relabelled position -> input edge id) maps values
    in and out, so callers see the input order.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int,
                 reorder: Optional[bool] = None):
        row, col = edge_index[0], edge_index[1]
        num_edges = row.numel()
        if reorder is None:
            reorder = num_edges >= locality.RELABEL_MIN_EDGES
        self.edge_perm = self.edge_rank = None
        if reorder and num_edges > 0:
            relabel = locality.Relabel(edge_index, num_nodes)
            row, col = relabel.edge_index
            self.edge_perm, self.edge_rank = relabel.edge_perm, \
                relabel.edge_rank
        self.num_nodes = num_nodes
        self._csr = CSRPattern(row, col, num_nodes, num_nodes)
        self.rowptr, self.col = self._csr.crow, self._csr.col_ids
        # The same maps in the kernels' id width, for the gathers, unsigned:
        # numba then indexes without its check for negative indices (2x
        # faster gathers at N = 64,000, a one-off run).
        self._perm = self._rank = None
        if self.edge_perm is not None:
            unsigned = f'u{self.col.element_size()}'
            self._perm, self._rank = (
                ids.to(self.col.dtype).numpy().view(unsigned)
                for ids in (self.edge_perm, self.edge_rank))
        deg = self.rowptr[1:] - self.rowptr[:-1]
        self.max_degree = int(deg.max()) if num_nodes > 0 else 0
        # Several chunks per thread even out rows of unequal work.
        self.num_chunks = max(1, min(num_nodes,
                                     16 * torch.get_num_threads()))

    # The transposed pattern (a sort of the edges) only for the passes that
    # read it, the weight gradients.
    @property
    def t_rowptr(self) -> Tensor:
        return self._csr.transpose()[1]

    @property
    def t_src(self) -> Tensor:
        return self._csr.transpose()[2]

    @cached_property
    def t_edge(self) -> Tensor:
        return self._csr.transpose()[0].to(self.col.dtype)

    @property
    def row(self) -> Tensor:
        r"""The row of each edge."""
        return self._csr.row

    def numpy(self, *names):
        return tuple(getattr(self, n).numpy() for n in names)

    def to_pattern(self, values: Tensor) -> Tensor:
        r"""Edge values :math:`(|\mathcal{E}|, M)` in input order -> in the
        kernels' order (contiguous)."""
        return self._gather(values, self._perm)

    def to_input(self, values: Tensor) -> Tensor:
        r"""The inverse of :meth:`to_pattern`."""
        return self._gather(values, self._rank)

    def edge_ids(self, ids: Tensor) -> Tensor:
        r"""Input edge ids -> the kernels' edge ids."""
        return ids if self.edge_perm is None else self.edge_rank[ids]

    def _gather(self, values: Tensor, index: Optional[np.ndarray]) -> Tensor:
        if index is None:
            return values.contiguous()
        # Compiled rather than torch's row gather: 2-4x faster on these
        # narrow rows, and it keeps torch's pool idle (see _zeros).
        out = _zeros(values)
        _call(_kernels().gather, values.contiguous().numpy(), index,
              out.numpy())
        return out


def _zeros(like: Tensor) -> Tensor:
    r"""Zeros of :obj:`like`'s shape and dtype, allocated by NumPy. Between
    the kernels nothing runs on torch's thread pool: its OpenMP threads
    spin for milliseconds after each parallel op, on the cores the kernels
    need (a torch ``zeros_like`` before each pass made the passes 1.4x
    slower at 16,000 nodes)."""
    return torch.from_numpy(np.zeros(like.shape, like.numpy().dtype))


class StoredPaths:
    r"""The two-step paths ``i -> l -> j`` of a :class:`Pattern` in the form
    the path kernels read (:func:`_path_kernels`), grouped by first edge
    ``(i, l)`` in the pattern's edge order: the CSR row pointer over first
    edges (:attr:`ptr`), and per path (:attr:`pairs`, :math:`(|\mathcal{P}|,
    2)`) the position of its closing edge ``(i, j)`` among the edges of row
    ``i`` and that of its second edge ``(l, j)`` among the edges of row
    ``l``, in the order of ``j``. The positions take 8 bits where no row has
    more than 256 edges, else 16 or 32 (:meth:`bytes_per_path`: 2 to 8
    bytes, where edge ids took 16). NumPy arrays. Made by
    :meth:`from_index` or :meth:`enumerate`."""

    def __init__(self, ptr: np.ndarray, pairs: np.ndarray):
        self.ptr, self.pairs = ptr, pairs
        self._bounds = None

    @property
    def num_paths(self) -> int:
        return int(self.ptr[-1])

    @staticmethod
    def position_dtype(pattern: Pattern) -> np.dtype:
        r"""The narrowest type of the positions in :obj:`pattern`'s rows."""
        for dtype in (np.uint8, np.uint16):
            if pattern.max_degree <= np.iinfo(dtype).max + 1:
                return np.dtype(dtype)
        return np.dtype(np.uint32)

    @classmethod
    def bytes_per_path(cls, pattern: Pattern) -> int:
        return 2 * cls.position_dtype(pattern).itemsize

    def bounds(self, pattern: Pattern) -> Tuple[np.ndarray, np.ndarray]:
        r"""Where the paths of each first edge start and stop, in the
        transposed pattern's order (computed once): the weight gradient
        reads them there, and reading them through the edge ids made it
        1.1 to 1.2x slower at N = 64,000 (one-off runs)."""
        if self._bounds is None:
            t_edge = pattern.t_edge.numpy()
            self._bounds = (self.ptr[t_edge], self.ptr[t_edge + 1])
        return self._bounds

    @classmethod
    def from_index(cls, paths: Tensor, pattern: Pattern) -> 'StoredPaths':
        r"""From a path index :math:`(3, |\mathcal{P}|)` in input edge ids,
        as :func:`~pyg_lego.nn.two_hop_paths` returns it.

        Raises:
            ValueError: If a column is not a path of :obj:`pattern`.
        """
        num_edges = pattern.col.numel()
        if paths.dim() != 2 or paths.size(0) != 3:
            raise ValueError(f"path_index must have shape (3, num_paths), "
                             f"got {tuple(paths.shape)}")
        num_paths = paths.size(1)
        first = np.empty(num_paths, np.int64)
        closing, second = np.empty((2, num_paths), np.int64)
        rank = pattern.edge_rank
        rank = np.empty(0, np.int64) if rank is None else rank.numpy()
        bad = _call(_kernels().locate, paths.long().contiguous().numpy(),
                    rank, *pattern.numpy('rowptr', 'row', 'col'), first,
                    closing, second)
        if bad:
            raise ValueError(
                f"path_index is not a two-step path index of this pattern: "
                f"{bad} of its {num_paths} columns (first, second, closing) "
                f"are no path i -> l -> j of the {num_edges} edges (pass "
                f"the two_hop_paths of the coalesced edge_index)")
        ptr = csr_rowptr(torch.from_numpy(first), num_edges,
                         id_dtype(num_edges, num_paths)).numpy()
        pairs = np.empty((num_paths, 2), cls.position_dtype(pattern))
        _call(_kernels().group_by_first, first, closing, second, ptr, pairs)
        return cls(ptr, pairs)

    @classmethod
    def enumerate(cls, pattern: Pattern, max_paths: Optional[int] = None
                  ) -> Optional['StoredPaths']:
        r"""All paths of :obj:`pattern` by two walks (a count, then a fill),
        or :obj:`None` if there are more than :obj:`max_paths`; the work
        space is the result's. 0.35 s at N = 64,000 (30M paths), where
        storing them as edge ids by closing edge and again by second edge
        took 1.7 s (a one-off run)."""
        kernels = _kernels()
        rowptr, col = pattern.numpy('rowptr', 'col')
        num_edges = col.size
        count = np.zeros(num_edges, np.int64)
        _run(kernels.count_by_first, pattern, rowptr, col, count)
        total = int(count.sum())
        if max_paths is not None and total > max_paths:
            return None
        ids = np.int32 if id_dtype(num_edges, total) == torch.int32 \
            else np.int64
        ptr = np.zeros(num_edges + 1, ids)
        np.cumsum(count, out=ptr[1:])
        pairs = np.empty((total, 2), cls.position_dtype(pattern))
        _run(kernels.fill_by_first, pattern, rowptr, col, ptr, pairs)
        return cls(ptr, pairs)


def enumerate_paths(pattern: Pattern, max_paths: Optional[int] = None
                    ) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
    r"""The paths of :obj:`pattern` by two walks (a count, then a fill),
    sorted by closing edge and by first edge within: the CSR row pointer
    over closing edges and the first and second edge ids (32 bits where
    they fit), in the pattern's edge ids; :obj:`None` if there are more
    than :obj:`max_paths`. 4 to 10x faster than enumerating candidates in
    torch (4000 to 64,000 nodes), and its memory is the result's."""
    kernels = _kernels()
    rowptr, col = pattern.numpy('rowptr', 'col')
    num_edges = col.size
    count = np.zeros(num_edges, np.int64)
    _run(kernels.count, pattern, rowptr, col, count, count, count)
    total = int(count.sum())
    if max_paths is not None and total > max_paths:
        return None
    ids = id_dtype(num_edges, total)
    ptr = torch.zeros(num_edges + 1, dtype=ids, device='cpu')
    torch.cumsum(torch.from_numpy(count), 0, out=ptr[1:])
    first = torch.empty(total, dtype=ids, device='cpu')
    second = torch.empty(total, dtype=ids, device='cpu')
    cursor = ptr[:-1].numpy().copy()
    _run(kernels.fill, pattern, rowptr, col, first.numpy(), second.numpy(),
         cursor)
    return ptr, first, second


def _run(kernel, pattern: Pattern, *args):
    _call(kernel, *args, pattern.num_nodes, pattern.num_chunks)


class NumbaMaskedPower(torch.autograd.Function):
    r"""Orders :math:`2..P` of the masked power of :math:`\mathbf{A}`
    (:math:`(|\mathcal{E}|, M)`, CPU) by the compiled row passes of this
    module; the same function of :math:`\mathbf{A}` as
    :class:`~pyg_lego.nn.graph_power.StreamedMaskedPower`, with the same
    backward recursion. Returns a tuple of :math:`P - 1` tensors
    :math:`(|\mathcal{E}|, M)`, one per order (each contiguous, so that
    no caller has to copy an order out of a stacked tensor)."""

    @staticmethod
    def forward(ctx, a: Tensor, pattern: Pattern, P: int,
                paths: Optional[StoredPaths] = None) -> Tuple[Tensor, ...]:
        rowptr, col = pattern.numpy('rowptr', 'col')
        a = pattern.to_pattern(a.detach())
        orders = [a]
        for _ in range(2, P + 1):
            out = _zeros(a)
            if paths is None:
                _run(_kernels().row, pattern, rowptr, col, orders[-1].numpy(),
                     a.numpy(), out.numpy())
            else:
                _call(_path_kernels(a.size(1))[0], rowptr, col, paths.ptr,
                      paths.pairs, orders[-1].numpy(), a.numpy(),
                      out.numpy(), pattern.num_chunks)
            orders.append(out)
        ctx.pattern, ctx.paths = pattern, paths
        ctx.save_for_backward(*orders[:-1])
        return tuple(pattern.to_input(order) for order in orders[1:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor):
        pattern, paths = ctx.pattern, ctx.paths
        orders = ctx.saved_tensors  # orders 1 .. P-1, the kernels' order
        a = orders[0]
        grad_a = _zeros(a).numpy()
        carry = None
        for p in range(len(grads) + 1, 1, -1):
            g = pattern.to_pattern(grads[p - 2]).numpy()
            # NumPy adds (one thread) keep torch's pool idle, see _zeros.
            g = g if carry is None else np.add(g, carry)
            carry = _zeros(a).numpy()
            rowptr, col, t_rowptr, t_src, t_edge = pattern.numpy(
                'rowptr', 'col', 't_rowptr', 't_src', 't_edge')
            if paths is None:
                kernels = _kernels()
                _run(kernels.carry, pattern, rowptr, col, g, a.numpy(),
                     carry)
                _run(kernels.weight, pattern, rowptr, col, t_rowptr, t_src,
                     t_edge, g, orders[p - 2].numpy(), grad_a)
            else:
                _, carry_pass, weight_pass = _path_kernels(a.size(1))
                _call(carry_pass, rowptr, col, paths.ptr, paths.pairs, g,
                      a.numpy(), carry, pattern.num_chunks)
                _call(weight_pass, rowptr, t_rowptr, t_src, t_edge,
                      *paths.bounds(pattern), paths.pairs, g,
                      orders[p - 2].numpy(), grad_a, pattern.num_chunks)
        grad_a += carry
        return pattern.to_input(torch.from_numpy(grad_a)), None, None, None
