r"""Similarity functions and score maps of the relation graphs (the
documentation's method page, docs/method.rst, section 1).

Edge-wise scores are computed by an autograd function that never holds an
``[|E|, d]`` tensor, in the forward pass or in the backward pass: dot products
on row-sorted edges are one sampled matrix product on the CSR pattern (and one
or two sparse-dense products backwards); otherwise the edges are taken in
chunks.
"""
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from pyg_lego import numba_runtime
from pyg_lego.data.calibration import ADAPTIVE_MAPS

SIMILARITIES = ('cosine', 'dot', 'rbf')
SCORE_MAPS = ('auto', 'affine', 'clamp', 'raw', 'local', 'snf')

#: Rows of ``Z`` whose norm is below this count as zero in cosine scores.
NORM_EPS = 1e-12


def check_similarity(similarity: str) -> str:
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, "
                         f"got {similarity!r}")
    return similarity


def resolve_score_map(score_map: str, similarity: str) -> str:
    r"""Resolves ``'auto'``: :math:`(1 + s) / 2` for cosine, raw otherwise.

    Cosine lies in :math:`[-1, 1]` and is mapped to :math:`[0, 1]`; the RBF
    kernel already lies in :math:`(0, 1]`, and the dot product is unbounded, so
    an affine map would not bound it either. The adaptive maps
    (:mod:`pyg_lego.data.calibration`) rescale cosine distances and apply to
    cosine only.
    """
    check_similarity(similarity)
    if score_map not in SCORE_MAPS:
        raise ValueError(f"score_map must be one of {SCORE_MAPS}, "
                         f"got {score_map!r}")
    if score_map in ADAPTIVE_MAPS and similarity != 'cosine':
        raise ValueError(f"score_map={score_map!r} rescales cosine "
                         f"distances; it needs similarity='cosine', got "
                         f"{similarity!r}")
    if score_map == 'auto':
        return 'affine' if similarity == 'cosine' else 'raw'
    return score_map


def apply_score_map(s: Tensor, score_map: str) -> Tensor:
    r"""Maps raw similarities ``s`` to relation scores (``score_map``
    resolved)."""
    if score_map == 'affine':
        return (1.0 + s) / 2.0
    if score_map == 'clamp':
        return s.clamp_min(0.0)
    if score_map == 'raw':
        return s
    if score_map in ADAPTIVE_MAPS:
        raise ValueError(f"score_map={score_map!r} sets its bandwidths from "
                         f"the pattern: it is applied by "
                         f"build_relation_graph and relation_scores, not "
                         f"edge by edge")
    raise ValueError(f"unresolved score map {score_map!r}")


def default_gamma(x: Tensor, gamma: Optional[float]) -> float:
    r"""RBF bandwidth: :obj:`gamma` or, as in scikit-learn, ``1 / d``."""
    return float(gamma) if gamma is not None else 1.0 / x.size(-1)


def prepare(x: Tensor, similarity: str) -> Tensor:
    r"""The features as the similarity sees them: unit rows for cosine
    (:class:`_UnitRows` where a gradient is taken, the same values as
    :func:`torch.nn.functional.normalize`)."""
    if similarity != 'cosine':
        return x
    if torch.is_grad_enabled() and x.requires_grad and \
            not torch.compiler.is_compiling():
        return _UnitRows.apply(x)
    return torch.nn.functional.normalize(x, p=2.0, dim=-1, eps=NORM_EPS)


class _UnitRows(torch.autograd.Function):
    r"""``x / max(||x||, eps)`` by rows, as
    :func:`torch.nn.functional.normalize` computes it, with the gradient in
    one expression,

    .. math::
        \nabla_{\mathbf{x}} = \frac{\mathbf{g} - \mathbf{z}\,
        (\mathbf{g} \cdot \mathbf{z})}{\max(\|\mathbf{x}\|, \epsilon)}

    (without the projection where the norm is below :math:`\epsilon`),
    instead of autograd's chain through the broadcast division: the
    propagated mode's forward and backward took 2.35 s against 2.68 s at
    N = 64,000 (medians of 6 rounds in one process). Under
    ``create_graph``, the gradient is recomputed from :math:`\mathbf{x}`
    with tracked operations, so that it can be differentiated again.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        denom = norm.clamp_min(NORM_EPS)
        z = x / denom
        ctx.save_for_backward(x, z, denom, norm)
        return z

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        x, z, denom, norm = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: track it through x
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            denom = norm.clamp_min(NORM_EPS)
            z = x / denom
        dot = (g * z).sum(-1, keepdim=True).masked_fill(norm < NORM_EPS, 0)
        return (g - z * dot) / denom


def _chunks(num: int, chunk_size: int):
    for start in range(0, num, chunk_size):
        yield start, min(start + chunk_size, num)


def id_dtype(*sizes: int) -> torch.dtype:
    r"""32-bit ids where every size fits them (MKL's CSR products convert
    64-bit ids on every call), else 64-bit."""
    return torch.int32 if max(sizes, default=0) < 2**31 - 1 else torch.long


def csr_rowptr(index: Tensor, num: int, dtype: torch.dtype = torch.long
               ) -> Tensor:
    r"""The CSR row pointer :math:`(\mathrm{num} + 1,)` of the row ids
    :obj:`index`: from their counts, so the ids may come in any order."""
    # torch_geometric.index.index2ptr takes 0.36x the time on sorted ids
    # (benchmarks/results/library_replacements.md) but reads them as
    # sorted; CSRPattern.transpose counts unsorted column ids here.
    ptr = torch.zeros(num + 1, dtype=dtype, device=index.device)
    torch.cumsum(torch.bincount(index, minlength=num), 0, out=ptr[1:])
    return ptr


class CSRPattern:
    r"""A row-sorted pattern of :math:`|\mathcal{E}|` edges as CSR (32-bit
    ids where they fit), which turns edge values into sparse matrices and
    their transposes.

    :func:`torch.sparse.mm` converts a transposed CSR operand back to CSR on
    every call, a sort of the edges each time; here the permutation to the
    transposed order is found once, on first use, and every transpose after
    it is one gather of the values.
    """

    def __init__(self, row: Tensor, col: Tensor, num_rows: int,
                 num_cols: int):
        ids = id_dtype(row.numel(), num_rows, num_cols)
        self.row, self.col = row, col
        self.shape = (num_rows, num_cols)
        self.crow = csr_rowptr(row, num_rows, ids)
        self.col_ids = col.to(ids)
        self._t = None

    def matrix(self, values: Tensor) -> Tensor:
        r"""The :math:`(N_{rows}, N_{cols})` CSR matrix carrying
        :obj:`values` :math:`(|\mathcal{E}|,)`."""
        return torch.sparse_csr_tensor(self.crow, self.col_ids, values,
                                       self.shape, device=values.device,
                                       check_invariants=False)

    def transpose(self) -> Tuple[Tensor, Tensor, Tensor, bool]:
        r"""The transposed pattern, computed once: the permutation from
        transposed order to edge ids, its row pointer and column ids, and
        whether it equals the pattern."""
        if self._t is None:
            num_rows, num_cols = self.shape
            # A stable sort of the column ids keeps the sorted rows in order
            # within a column: 4x faster than sorting (col, row) keys of 64
            # bits (2.4M edges).
            perm = torch.sort(self.col_ids, stable=True).indices
            crow = csr_rowptr(self.col, num_cols, self.crow.dtype)
            col = self.row[perm].to(self.crow.dtype)
            symmetric = num_rows == num_cols and torch.equal(crow, self.crow) \
                and torch.equal(col, self.col_ids)
            self._t = (perm, crow, col, symmetric)
        return self._t

    @property
    def symmetric(self) -> bool:
        r"""Whether the pattern equals its transpose (as kNN unions do)."""
        return self.transpose()[3]

    def transposed(self, values: Tensor) -> Tensor:
        r"""The transpose of :meth:`matrix`, as a CSR matrix."""
        perm, crow, col, _ = self.transpose()
        return torch.sparse_csr_tensor(crow, col, values[perm],
                                       (self.shape[1], self.shape[0]),
                                       device=values.device,
                                       check_invariants=False)

    def symmetrized(self, values: Tensor) -> Tensor:
        r"""The values of :math:`\mathbf{G} + \mathbf{G}^\top` on a
        :attr:`symmetric` pattern, for :obj:`values` those of
        :math:`\mathbf{G}`."""
        return values + values[self.transpose()[0]]


def csr_pattern(row: Tensor, col: Tensor, num_rows: int, num_cols: int,
                dtype: torch.dtype) -> Optional[CSRPattern]:
    r"""The :class:`CSRPattern` of edges sorted by :obj:`row`, or
    :obj:`None` if the rows are not sorted, :obj:`dtype` has no sparse
    kernels or :func:`torch.compile` is tracing (it cannot build sparse
    tensors; the callers fall back to dense gathers)."""
    if dtype not in (torch.float32, torch.float64) or row.numel() == 0 or \
            torch.compiler.is_compiling():
        return None
    if row.numel() > 1 and not bool((row[1:] >= row[:-1]).all()):
        return None
    return CSRPattern(row, col, num_rows, num_cols)


def reuses_work(x: Tensor, sqdist: bool = False) -> bool:
    r"""Whether dot products of :obj:`x` are computed once per edge pair
    and known ones reused (:func:`edge_reduce`'s :obj:`known` and
    :obj:`reverse`): on the CPU, with numba installed. Elsewhere every edge
    is computed: torch's index operations to pick out and place the
    remaining edges cost as much as the products they save (N = 4000 to
    1M, this machine)."""
    return x.device.type == 'cpu' and not sqdist and \
        x.dtype in (torch.float32, torch.float64) and \
        numba_runtime.available()


def _reduce(x: Tensor, row: Tensor, col: Tensor, sqdist: bool,
            chunk_size: int, pattern: Optional[CSRPattern]) -> Tensor:
    if pattern is not None:
        return torch.sparse.sampled_addmm(
            pattern.matrix(x.new_zeros(row.numel())), x, x.t(),
            beta=0.0).values()
    out = x.new_empty(row.numel())
    for s, e in _chunks(row.numel(), chunk_size):
        a, b = x[row[s:e]], x[col[s:e]]
        out[s:e] = ((a - b)**2).sum(-1) if sqdist else (a * b).sum(-1)
    return out


@lru_cache(maxsize=None)
def _score_kernels():
    numba = numba_runtime.numba()

    @numba.njit(nogil=True)
    def place(index, value, known, out):
        for t in range(index.size):
            out[index[t]] = value[t]
            known[index[t]] = True

    # fastmath lets the dot products vectorise (the sum's order changes,
    # as it does between any two BLAS kernels).
    @numba.njit(parallel=True, nogil=True, fastmath=True)
    def upper_dots(rowptr, col, z, known, out):
        for i in numba.prange(rowptr.size - 1):
            for e in range(rowptr[i], rowptr[i + 1]):
                j = col[e]
                if known[e] or j < i:
                    continue
                acc = z[i, 0] * z[j, 0]
                for f in range(1, z.shape[1]):
                    acc += z[i, f] * z[j, f]
                out[e] = acc

    @numba.njit(parallel=True, nogil=True)
    def mirror(rowptr, col, reverse, known, out):
        for i in numba.prange(rowptr.size - 1):
            for e in range(rowptr[i], rowptr[i + 1]):
                if col[e] < i and not known[e]:
                    out[e] = out[reverse[e]]

    return place, upper_dots, mirror


def _dots_once(z: Tensor, pattern: CSRPattern, known_index: Optional[Tensor],
               known_value: Optional[Tensor], reverse: Tensor) -> Tensor:
    r"""Dot products on a symmetric pattern, each pair once: the known
    ones placed, those of edges ``i <= j`` computed, the rest copied from
    their reverses (compiled; one pass each)."""
    place, upper_dots, mirror = _score_kernels()
    rowptr, col = pattern.crow.numpy(), pattern.col_ids.numpy()
    out = np.empty(col.size, z.numpy().dtype)
    known = np.zeros(col.size, np.bool_)
    if known_index is not None:
        numba_runtime.call(place, known_index.numpy(),
                           known_value.to(z.dtype).numpy(), known, out)
    numba_runtime.call(upper_dots, rowptr, col, z.contiguous().numpy(), known,
                       out)
    numba_runtime.call(mirror, rowptr, col, reverse.numpy(), known, out)
    return torch.from_numpy(out)


class _EdgeReduce(torch.autograd.Function):
    r"""``out[e] = sum_f op(x[row[e], f], x[col[e], f])`` in edge chunks.

    ``op`` is the product (dot) or the squared difference (squared distance).
    The backward recomputes the gathered rows chunk by chunk instead of saving
    them, which is what keeps memory at ``O(|E| + N d)``.

    Where :func:`reuses_work`, work already done is not done again: on a
    symmetric pattern with :obj:`reverse` (the id of each edge's reverse),
    values given as :obj:`known_value` at :obj:`known_index` are taken as
    they are, the other edges ``row <= col`` are computed, and the rest
    copied from their reverses. The backward pass is the same either way.
    """

    @staticmethod
    def forward(ctx, x: Tensor, row: Tensor, col: Tensor, sqdist: bool,
                chunk_size: int, pattern: Optional[CSRPattern],
                known_index: Optional[Tensor], known_value: Optional[Tensor],
                reverse: Optional[Tensor]) -> Tensor:
        num_nodes = x.size(0)
        if pattern is None and not sqdist:
            pattern = csr_pattern(row, col, num_nodes, num_nodes, x.dtype)
        ctx.save_for_backward(x, row, col)
        ctx.sqdist, ctx.chunk_size = sqdist, chunk_size
        ctx.pattern = None if sqdist else pattern
        if reverse is not None and reuses_work(x, sqdist) and \
                ctx.pattern is not None:
            return _dots_once(x.detach(), ctx.pattern, known_index,
                              known_value, reverse)
        return _reduce(x, row, col, sqdist, chunk_size, ctx.pattern)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, row, col = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0] and ctx.pattern is not None:
            g, pattern = grad_out.contiguous(), ctx.pattern
            # (G + G^T) x, one product where the pattern is symmetric.
            grad_x = torch.sparse.mm(pattern.matrix(pattern.symmetrized(g)),
                                     x) if pattern.symmetric else \
                torch.sparse.mm(pattern.matrix(g), x) + \
                torch.sparse.mm(pattern.transposed(g), x)
        elif ctx.needs_input_grad[0]:
            grad_x = torch.zeros_like(x)
            for s, e in _chunks(row.numel(), ctx.chunk_size):
                r, c, g = row[s:e], col[s:e], grad_out[s:e].unsqueeze(-1)
                if ctx.sqdist:
                    diff = 2.0 * g * (x[r] - x[c])
                    grad_x.index_add_(0, r, diff)
                    grad_x.index_add_(0, c, -diff)
                else:
                    grad_x.index_add_(0, r, g * x[c])
                    grad_x.index_add_(0, c, g * x[r])
        return grad_x, None, None, None, None, None, None, None, None


def edge_chunk_size(dim: int, budget_bytes: int = 64 * 2**20,
                    element_size: int = 4) -> int:
    return max(1024, budget_bytes // max(1, 2 * dim * element_size))


def edge_reduce(x: Tensor, edge_index: Tensor, sqdist: bool = False,
                chunk_size: Optional[int] = None,
                pattern: Optional[CSRPattern] = None,
                known: Optional[Tuple[Tensor, Tensor]] = None,
                reverse: Optional[Tensor] = None) -> Tensor:
    r"""Edge-wise dot product (or squared distance) of the rows of ``x``;
    :obj:`pattern`, the :class:`CSRPattern` of :obj:`edge_index`, saves
    rebuilding it when many calls share the edges; where :func:`reuses_work`,
    :obj:`known` (edge ids and their values) are results already at hand,
    and :obj:`reverse` (on a symmetric pattern, the id of each edge's
    reverse) halves the work."""
    if chunk_size is None:
        chunk_size = edge_chunk_size(x.size(-1), element_size=x.element_size())
    known_index, known_value = known if known is not None else (None, None)
    return _EdgeReduce.apply(x, edge_index[0], edge_index[1], sqdist,
                             chunk_size, pattern, known_index, known_value,
                             reverse)


def edge_similarity(x: Tensor, edge_index: Tensor, similarity: str,
                    score_map: str = 'auto', gamma: Optional[float] = None,
                    prepared: bool = False,
                    pattern: Optional[CSRPattern] = None,
                    known: Optional[Tuple[Tensor, Tensor]] = None,
                    reverse: Optional[Tensor] = None) -> Tensor:
    r"""Relation scores of one view on every edge of ``edge_index``.

    Args:
        x (torch.Tensor): Features :math:`(N, d)`.
        edge_index (torch.Tensor): Edges :math:`(2, |\mathcal{E}|)`.
        similarity (str): :obj:`"cosine"`, :obj:`"dot"` or :obj:`"rbf"`.
        score_map (str, optional): :obj:`"auto"`, :obj:`"affine"`,
            :obj:`"clamp"` or :obj:`"raw"`. (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth; ``1 / d`` if :obj:`None`.
        prepared (bool, optional): If :obj:`True`, :obj:`x` is already
            unit-normalised for cosine. (default: :obj:`False`)
        pattern (CSRPattern, optional): The CSR form of :obj:`edge_index`,
            shared by calls on the same edges.
        known (Tuple[torch.Tensor, torch.Tensor], optional): Edge ids and
            their raw similarities (before the score map), e.g. from the kNN
            search (:attr:`KNNResult.score
            <pyg_lego.data.backends.KNNResult>`), given for both edges of
            each pair: these are taken as given, with :obj:`reverse`. Cosine
            and dot only.
        reverse (torch.Tensor, optional): On a symmetric pattern, the id of
            each edge's reverse edge :math:`(|\mathcal{E}|,)` (a self-loop
            its own): similarities are symmetric, so only edges
            :math:`i \le j` are computed and the others copied. Both apply
            where :func:`reuses_work`; elsewhere every edge is computed. The
            gradient with respect to :obj:`x` is that of all edges.

    Returns:
        Scores :math:`(|\mathcal{E}|,)`.
    """
    score_map = resolve_score_map(score_map, similarity)
    if similarity == 'rbf':
        if known is not None:
            raise ValueError("known similarities apply to 'cosine' and "
                             "'dot' only")
        s = torch.exp(-default_gamma(x, gamma) *
                      edge_reduce(x, edge_index, sqdist=True))
    else:
        z = x if prepared else prepare(x, similarity)
        s = edge_reduce(z, edge_index, pattern=pattern, known=known,
                        reverse=reverse)
    return apply_score_map(s, score_map)


def knn_scores(q: Tensor, x: Tensor, similarity: str,
               sq_norms: Optional[Tensor] = None) -> Tensor:
    r"""Block of scores whose row-wise order is the kNN order.

    For RBF the block holds :math:`2 q \cdot x - \|x\|^2`, which orders each
    row like :math:`-\|q - x\|^2` without forming differences.
    """
    s = q @ x.t()
    if similarity == 'rbf':
        assert sq_norms is not None
        s = 2.0 * s - sq_norms.unsqueeze(0)
    return s

