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
walks store them (:meth:`StoredPaths.enumerate`: a count, then a fill)
and every pass after that reads them instead (:func:`_path_kernels`):
two gathered rows per path, where the walk examines every candidate
:math:`l \to j` of the row. At 64,000 nodes (30M paths) the enumeration
plus the stored forward and backward of :class:`NumbaMaskedPower` took
1.2 s against 1.8 s for the walks alone, and 0.5 s once the paths are
cached.
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
from pyg_lego.nn.path_index import sort_by_closing
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

    @numba.njit(cache=False, nogil=True)
    def transpose_paths(ptr, first, second, t_ptr, t_closing, t_first):
        r"""The paths regrouped by second edge (a counting sort, stable:
        closing-edge order within a group); :obj:`t_ptr` is given."""
        cursor = t_ptr[:-1].copy()
        for e in range(ptr.size - 1):
            for q in range(ptr[e], ptr[e + 1]):
                s = second[q]
                r = cursor[s]
                t_closing[r] = e
                t_first[r] = first[q]
                cursor[s] = r + 1

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
                           fill=fill_pass, transpose=transpose_paths)


#: Neighbours ahead of the one being walked whose rows the walks prefetch
#: (:func:`_kernels`). ``benchmarks/prefetch.py`` at N = 64,000: the forward,
#: carry and weight walks took 0.92, 0.95 and 0.94x their time without the
#: hint, and the gather between edge orders (:obj:`PREFETCH_DISTANCE` rows
#: ahead) 0.56x.
WALK_AHEAD = 2
#: Paths ahead of the one being summed whose gathered rows the stored-path
#: kernels prefetch (:func:`_path_kernels`). ``benchmarks/prefetch.py`` at
#: N = 64,000 (30M paths): the forward, carry and weight passes took 0.54,
#: 0.55 and 0.64x their time without the hint, 0.70 to 0.83x at 16,000. A
#: one-off sweep before that script (same kernels and graph) gave 0.63 to
#: 0.73x at 16 paths ahead and 0.51 to 0.58x at 128; rerun it with
#: ``--distance``.
PREFETCH_DISTANCE = 64


@lru_cache(maxsize=None)
def _path_kernels(views: int, prefetch: bool = True):
    r"""The passes over a stored path index, for :obj:`views` columns: each
    sums into registers per written edge, so each loops over a grouping of
    the paths by the edge it writes. The source is generated per width
    because numba cannot unroll a loop of run-time length, and per-view
    accumulators held in registers make the passes ~1.3x faster.

    * ``forward``: ``out[e] += sum src[first] * weight[second]`` over the
      paths closed by ``e`` (one order);
    * ``carry``: ``out[first] += grad[e] * weight[second]``, by closing
      edge as well: a path's first edge ``(i, l)`` lies in the row of its
      closing edge ``(i, j)``, so chunks of whole rows write apart;
    * ``weight``: ``out[second] += sum grad[closing] * prev[first]`` over
      the paths grouped by second edge (:attr:`StoredPaths.t_ptr`).

    The rows each pass gathers from far away (the second edges'; in
    ``weight`` both) are prefetched :obj:`PREFETCH_DISTANCE` paths ahead,
    where :obj:`prefetch` is set and numba can compile the hint
    (:func:`pyg_lego.numba_runtime.prefetch`).
    """
    numba = numba_runtime.numba()
    hint = numba_runtime.prefetch() if prefetch else None
    acc = range(views)

    def compile(name, lines):
        scope = {'numba': numba, 'prefetch': hint, 'D': PREFETCH_DISTANCE}
        exec('\n'.join(lines), scope)
        return numba.njit(parallel=True, nogil=True)(scope[name])

    def ahead(indent, *rows):
        if hint is None:
            return []
        return [f'{indent}if q + D < end:',
                *[f'{indent}    prefetch({array}, {ids}[q + D])'
                  for array, ids in rows]]

    def gathered(name, group, *args, far):
        a, b, x, y = args
        return compile(name, [
            f'def {name}(ptr, {a}, {b}, {x}, {y}, out):',
            '    end = ptr[ptr.size - 1]',
            f'    for {group} in numba.prange(ptr.size - 1):',
            *[f'        a{m} = out[{group}, {m}]' for m in acc],
            f'        for q in range(ptr[{group}], ptr[{group} + 1]):',
            *ahead(' ' * 12, *far),
            f'            u = {a}[q]',
            f'            v = {b}[q]',
            *[f'            a{m} += {x}[u, {m}] * {y}[v, {m}]' for m in acc],
            *[f'        out[{group}, {m}] = a{m}' for m in acc]])

    forward = gathered('forward', 'e', 'first', 'second', 'src', 'weight',
                       far=[('weight', 'second')])
    weight = gathered('weight', 'e2', 't_closing', 't_first', 'grad',
                      'prev', far=[('grad', 't_closing'),
                                   ('prev', 't_first')])
    carry = compile('carry', [
        'def carry(rowptr, ptr, first, second, grad, weight, out,',
        '          num_chunks):',
        '    n = rowptr.size - 1',
        '    end = ptr[ptr.size - 1]',
        '    for c in numba.prange(num_chunks):',
        '        start = rowptr[c * n // num_chunks]',
        '        stop = rowptr[(c + 1) * n // num_chunks]',
        '        for e in range(start, stop):',
        *[f'            g{m} = grad[e, {m}]' for m in acc],
        '            for q in range(ptr[e], ptr[e + 1]):',
        *ahead(' ' * 16, ('weight', 'second')),
        '                f = first[q]',
        '                s = second[q]',
        *[f'                out[f, {m}] += g{m} * weight[s, {m}]'
          for m in acc]])
    return forward, carry, weight


class Pattern:
    r"""The CSR pattern of a coalesced :obj:`edge_index` and its transpose,
    as the kernels read them (NumPy views of CPU tensors, 32-bit ids where
    they fit).

    A pattern of :obj:`~pyg_lego.nn.locality.RELABEL_MIN_EDGES` edges or
    more is relabelled first (:class:`~pyg_lego.nn.locality.Relabel`), so
    that the rows a walk visits lie close together in memory: nodes
    numbered at random (as a kNN graph's are) put every step of a walk in
    another cache line, which made the passes 2x slower at 64,000 nodes.
    The kernels then run on the relabelled edges;
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
        # The same maps in the kernels' id width, for the gathers.
        self._perm = self._rank = None
        if self.edge_perm is not None:
            self._perm = self.edge_perm.to(self.col.dtype).numpy()
            self._rank = self.edge_rank.to(self.col.dtype).numpy()
        deg = self.rowptr[1:] - self.rowptr[:-1]
        #: The walks ``i -> l -> j`` of a pass, closed or not: an upper
        #: bound on the number of paths.
        self.num_candidates = int(deg[self.col.long()].sum())
        # Several chunks per thread even out rows of unequal work.
        self.num_chunks = max(1, min(num_nodes,
                                     16 * torch.get_num_threads()))

    # The transposed pattern (a sort of the edges) only for the passes that
    # read it, the walks' weight gradient: stored paths never do.
    @property
    def t_rowptr(self) -> Tensor:
        return self._csr.transpose()[1]

    @property
    def t_src(self) -> Tensor:
        return self._csr.transpose()[2]

    @cached_property
    def t_edge(self) -> Tensor:
        return self._csr.transpose()[0].to(self.col.dtype)

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
    r"""Two-step paths in the form the path kernels read, in the edge ids
    of a :class:`Pattern` and ids of 32 bits where they fit: sorted by
    closing edge, the CSR row pointer over closing edges (:attr:`ptr`)
    and the ids of the two path edges (:attr:`first`, :attr:`second`);
    and sorted by second edge, for the gradient of the weights, the row
    pointer over second edges (:attr:`t_ptr`) and the ids of the closing
    and first edges (:attr:`t_closing`, :attr:`t_first`). 16 bytes per
    path. Made by :meth:`from_index` or :meth:`enumerate`."""

    BYTES_PER_PATH = 16

    def __init__(self, ptr: Tensor, first: Tensor, second: Tensor):
        self.ptr, self.first, self.second = ptr, first, second
        # csr_rowptr counts ids; they need not be sorted.
        self.t_ptr = csr_rowptr(second, ptr.numel() - 1, ptr.dtype)
        self.t_closing = torch.empty_like(first)
        self.t_first = torch.empty_like(first)
        _call(_kernels().transpose, *self.numpy(
            'ptr', 'first', 'second', 't_ptr', 't_closing', 't_first'))

    @classmethod
    def from_index(cls, paths: Tensor, pattern: Pattern) -> 'StoredPaths':
        r"""From a path index :math:`(3, |\mathcal{P}|)` in input edge ids,
        as :func:`~pyg_lego.nn.two_hop_paths` returns it."""
        num_edges = pattern.col.numel()
        ids = id_dtype(num_edges, paths.size(1))
        paths = sort_by_closing(pattern.edge_ids(paths))
        return cls(csr_rowptr(paths[2], num_edges, ids), paths[0].to(ids),
                   paths[1].to(ids))

    @classmethod
    def enumerate(cls, pattern: Pattern, max_paths: Optional[int] = None
                  ) -> Optional['StoredPaths']:
        r"""All paths of :obj:`pattern` (:func:`enumerate_paths`), or
        :obj:`None` if there are more than :obj:`max_paths`."""
        found = enumerate_paths(pattern, max_paths)
        return None if found is None else cls(*found)

    def numpy(self, *names):
        return tuple(getattr(self, n).numpy() for n in names)


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
    ptr = torch.zeros(num_edges + 1, dtype=ids)
    torch.cumsum(torch.from_numpy(count), 0, out=ptr[1:])
    first = torch.empty(total, dtype=ids)
    second = torch.empty(total, dtype=ids)
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
                _call(_path_kernels(a.size(1))[0],
                      *paths.numpy('ptr', 'first', 'second'),
                      orders[-1].numpy(), a.numpy(), out.numpy())
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
            if paths is None:
                kernels = _kernels()
                rowptr, col, t_rowptr, t_src, t_edge = pattern.numpy(
                    'rowptr', 'col', 't_rowptr', 't_src', 't_edge')
                _run(kernels.carry, pattern, rowptr, col, g, a.numpy(),
                     carry)
                _run(kernels.weight, pattern, rowptr, col, t_rowptr, t_src,
                     t_edge, g, orders[p - 2].numpy(), grad_a)
            else:
                _, carry_pass, weight_pass = _path_kernels(a.size(1))
                _call(carry_pass, pattern.rowptr.numpy(),
                      *paths.numpy('ptr', 'first', 'second'), g, a.numpy(),
                      carry, pattern.num_chunks)
                _call(weight_pass, *paths.numpy('t_ptr', 't_closing',
                                                't_first'),
                      g, orders[p - 2].numpy(), grad_a)
        grad_a += carry
        return pattern.to_input(torch.from_numpy(grad_a)), None, None, None
