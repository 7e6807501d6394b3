r"""The masked power on the CPU with compiled loops (optional: numba).

Every order is one pass over the rows of the pattern. Row :math:`i` marks
where each of its neighbours :math:`j` sits among its edges (a per-thread
array of :math:`N` edge ids, reset after the row), then walks
:math:`i \to l \to j` over the neighbours :math:`l` of :math:`i` and the
neighbours :math:`j` of :math:`l`; a marked :math:`j` closes the path. No
path index is built or stored: memory stays :math:`O(|\mathcal{E}| M P)`
plus the markers, and all :math:`M` views share each walk. The backward
pass runs two such passes per order, each writing to one row's edges
only, so the threads never write to the same place.

Where a path index is kept (given, or cached for a fixed graph), the
forward orders read it instead, as a CSR matrix over the closing edges
(:class:`StoredPaths`): two gathered rows per path, where a sparse-dense
product with as many non-zeros gathers one.
"""
import os
import threading
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from pyg_lego.data.similarity import CSRPattern, csr_rowptr, id_dtype
from pyg_lego.nn.path_index import sort_by_closing


#: Serialises kernel calls: the kernels release the GIL, and numba's
#: 'workqueue' threading layer must not be entered by two threads at once.
_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def available() -> bool:
    r"""Whether numba imports (an install that fails to import, e.g.
    against a NumPy it does not support, counts as absent, so that
    :obj:`kernel='auto'` falls back to torch)."""
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


@lru_cache(maxsize=None)
def _kernels():
    import numba
    if 'NUMBA_THREADING_LAYER' not in os.environ:
        # numba's default 'omp' layer loads the system libgomp beside the one
        # torch ships, two OpenMP runtimes in one process (a DDP test rank
        # hung once in CI with both loaded). numba's own 'workqueue' pool is
        # as fast on these kernels; _LOCK keeps its calls one at a time, as
        # that layer requires.
        numba.config.THREADING_LAYER = 'workqueue'

    @numba.njit(inline='always')
    def forward_step(out, src, weight, e, e1, e2):
        for m in range(out.shape[1]):
            out[e, m] += src[e1, m] * weight[e2, m]

    @numba.njit(inline='always')
    def carry_step(out, grad, weight, e, e1, e2):
        for m in range(out.shape[1]):
            out[e1, m] += grad[e, m] * weight[e2, m]

    def walk(step):
        r"""A pass over the paths ``i -> l -> j`` closed by ``(i, j)``, by
        rows ``i``, calling :obj:`step` with the ids ``e`` of ``(i, j)``,
        ``e1`` of ``(i, l)`` and ``e2`` of ``(l, j)`` (numba compiles the
        step into the loop)."""
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
                    for e in range(rowptr[i], rowptr[i + 1]):
                        e2 = marker[col[e]]
                        if e2 >= 0:
                            for m in range(views):
                                out[e2, m] += grad[e, m] * prev[e1, m]
                for e in range(rowptr[l], rowptr[l + 1]):
                    marker[col[e]] = -1

    return row_pass, carry_pass, weight_pass


@lru_cache(maxsize=None)
def _path_kernel(views: int):
    r"""``out[e] += sum_p src[first[p]] * weight[second[p]]`` over the paths
    ``p`` of edge ``e``, for :obj:`views` columns. The source is generated
    per width because numba cannot unroll a loop of run-time length, and
    per-view accumulators held in registers make it ~1.3x faster."""
    import numba
    acc = range(views)
    src = '\n'.join([
        'def path_pass(ptr, first, second, src, weight, out):',
        '    for e in numba.prange(ptr.size - 1):',
        *[f'        a{m} = out[e, {m}]' for m in acc],
        '        for q in range(ptr[e], ptr[e + 1]):',
        '            f = first[q]',
        '            s = second[q]',
        *[f'            a{m} += src[f, {m}] * weight[s, {m}]' for m in acc],
        *[f'        out[e, {m}] = a{m}' for m in acc]])
    scope = {'numba': numba}
    exec(src, scope)
    return numba.njit(parallel=True, nogil=True)(scope['path_pass'])


#: Patterns with at least this many edges are relabelled for locality
#: (see :class:`Pattern`); smaller ones fit the caches as they are.
REORDER_MIN_EDGES = 1 << 17


class Pattern:
    r"""The CSR pattern of a coalesced :obj:`edge_index` and its transpose,
    as the kernels read them (NumPy views of CPU tensors, 32-bit ids where
    they fit).

    A large pattern is relabelled first, nodes in reverse Cuthill-McKee
    order (SciPy), so that the rows a walk visits lie close together in
    memory: nodes numbered at random (as a kNN graph's are) put every step
    of a walk in another cache line, which made the passes 2x slower at
    64,000 nodes. The kernels then run on the relabelled edges;
    :attr:`edge_perm` (relabelled position -> input edge id) maps values
    in and out, so callers see the input order.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int,
                 reorder: Optional[bool] = None):
        row, col = edge_index[0], edge_index[1]
        num_edges = row.numel()
        if reorder is None:
            reorder = num_edges >= REORDER_MIN_EDGES
        self.edge_perm = None
        if reorder and num_edges > 0:
            rank = _locality_rank(row, col, num_nodes)
            row, col = rank[row], rank[col]
            self.edge_perm = torch.sort(row * num_nodes + col).indices
            row, col = row[self.edge_perm], col[self.edge_perm]
            self.edge_rank = torch.empty_like(self.edge_perm)
            self.edge_rank[self.edge_perm] = torch.arange(num_edges)
        self.num_nodes = num_nodes
        csr = CSRPattern(row, col, num_nodes, num_nodes)
        self.rowptr, self.col = csr.crow, csr.col_ids
        perm, self.t_rowptr, self.t_src, _ = csr.transpose()
        self.t_edge = perm.to(self.col.dtype)
        # Several chunks per thread even out rows of unequal work.
        self.num_chunks = max(1, min(num_nodes,
                                     16 * torch.get_num_threads()))

    def numpy(self, *names):
        return tuple(getattr(self, n).numpy() for n in names)

    def to_pattern(self, values: Tensor) -> Tensor:
        r"""Edge values :math:`(|\mathcal{E}|, \ldots)` in input order ->
        in the kernels' order (contiguous)."""
        values = values if self.edge_perm is None else values[self.edge_perm]
        return values.contiguous()

    def to_input(self, values: Tensor) -> Tensor:
        r"""The inverse of :meth:`to_pattern`."""
        return values if self.edge_perm is None else values[self.edge_rank]

    def edge_ids(self, ids: Tensor) -> Tensor:
        r"""Input edge ids -> the kernels' edge ids."""
        return ids if self.edge_perm is None else self.edge_rank[ids]


def _locality_rank(row: Tensor, col: Tensor, num_nodes: int) -> Tensor:
    r"""New label of every node: its position in the reverse Cuthill-McKee
    order of the symmetrised pattern."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee
    adj = sp.csr_matrix((np.ones(row.numel(), dtype=np.int8),
                         (row.numpy(), col.numpy())),
                        shape=(num_nodes, num_nodes))
    order = torch.from_numpy(reverse_cuthill_mckee(
        adj, symmetric_mode=False).astype(np.int64))
    rank = torch.empty(num_nodes, dtype=torch.long)
    rank[order] = torch.arange(num_nodes)
    return rank


class StoredPaths:
    r"""A path index :math:`(3, |\mathcal{P}|)` (as
    :func:`~pyg_lego.nn.two_hop_paths` returns it) in the form the path
    kernel reads: in the edge ids of :obj:`pattern`, sorted by closing
    edge, the CSR row pointer over closing edges and the 32-bit ids of the
    two path edges, 8 bytes per path."""

    def __init__(self, paths: Tensor, pattern: Pattern):
        num_edges = pattern.col.numel()
        ids = id_dtype(num_edges, paths.size(1))
        paths = sort_by_closing(pattern.edge_ids(paths))
        self.ptr = csr_rowptr(paths[2], num_edges, ids)
        self.first = paths[0].to(ids)
        self.second = paths[1].to(ids)


def _set_threads():
    import numba
    numba.set_num_threads(max(1, min(torch.get_num_threads(),
                                     numba.config.NUMBA_NUM_THREADS)))


def _call(kernel, *args):
    with _LOCK:
        _set_threads()
        kernel(*args)


def _run(kernel, pattern: Pattern, *args):
    _call(kernel, *args, pattern.num_nodes, pattern.num_chunks)


class NumbaMaskedPower(torch.autograd.Function):
    r"""Orders :math:`2..P` of the masked power of :math:`\mathbf{A}`
    (:math:`(|\mathcal{E}|, M)`, CPU) by the compiled row passes of this
    module; the same function of :math:`\mathbf{A}` as
    :class:`~pyg_lego.nn.graph_power.StreamedMaskedPower`, with the same
    backward recursion. Returns :math:`(|\mathcal{E}|, M, P - 1)`."""

    @staticmethod
    def forward(ctx, a: Tensor, pattern: Pattern, P: int,
                paths: Optional[StoredPaths] = None) -> Tensor:
        row_pass, _, _ = _kernels()
        rowptr, col = pattern.numpy('rowptr', 'col')
        a = pattern.to_pattern(a.detach())
        orders = [a]
        for _ in range(2, P + 1):
            out = torch.zeros_like(a)
            if paths is None:
                _run(row_pass, pattern, rowptr, col, orders[-1].numpy(),
                     a.numpy(), out.numpy())
            else:
                _call(_path_kernel(a.size(1)), paths.ptr.numpy(),
                      paths.first.numpy(), paths.second.numpy(),
                      orders[-1].numpy(), a.numpy(), out.numpy())
            orders.append(out)
        ctx.pattern = pattern
        ctx.save_for_backward(*orders[:-1])
        return pattern.to_input(torch.stack(orders[1:], dim=-1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        _, carry_pass, weight_pass = _kernels()
        pattern = ctx.pattern
        rowptr, col, t_rowptr, t_src, t_edge = pattern.numpy(
            'rowptr', 'col', 't_rowptr', 't_src', 't_edge')
        orders = ctx.saved_tensors  # orders 1 .. P-1, the kernels' order
        a = orders[0]
        grad = pattern.to_pattern(grad)
        grad_a = torch.zeros_like(a)
        carry = None
        for p in range(grad.size(-1) + 1, 1, -1):
            g = grad[..., p - 2] if carry is None else grad[..., p - 2] + carry
            g = g.contiguous()
            carry = torch.zeros_like(a)
            _run(carry_pass, pattern, rowptr, col, g.numpy(), a.numpy(),
                 carry.numpy())
            _run(weight_pass, pattern, rowptr, col, t_rowptr, t_src, t_edge,
                 g.numpy(), orders[p - 2].numpy(), grad_a.numpy())
        return pattern.to_input(grad_a + carry), None, None, None
