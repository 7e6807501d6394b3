r"""Similarity functions and score maps of the relation graphs (METHOD.md, section 1).

Edge-wise scores are computed by an autograd function that never holds an
``[|E|, d]`` tensor, in the forward pass or in the backward pass: dot products
on row-sorted edges are one sampled matrix product on the CSR pattern (and two
sparse-dense products backwards); otherwise the edges are taken in chunks.
"""
from typing import Optional

import torch
from torch import Tensor

SIMILARITIES = ('cosine', 'dot', 'rbf')
SCORE_MAPS = ('auto', 'affine', 'clamp', 'raw')

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
    an affine map would not bound it either.
    """
    check_similarity(similarity)
    if score_map not in SCORE_MAPS:
        raise ValueError(f"score_map must be one of {SCORE_MAPS}, "
                         f"got {score_map!r}")
    if score_map == 'auto':
        return 'affine' if similarity == 'cosine' else 'raw'
    return score_map


def apply_score_map(s: Tensor, score_map: str) -> Tensor:
    r"""Maps raw similarities ``s`` to relation scores (``score_map`` resolved)."""
    if score_map == 'affine':
        return (1.0 + s) / 2.0
    if score_map == 'clamp':
        return s.clamp_min(0.0)
    if score_map == 'raw':
        return s
    raise ValueError(f"unresolved score map {score_map!r}")


def default_gamma(x: Tensor, gamma: Optional[float]) -> float:
    r"""RBF bandwidth: :obj:`gamma` or, as in scikit-learn, ``1 / d``."""
    return float(gamma) if gamma is not None else 1.0 / x.size(-1)


def prepare(x: Tensor, similarity: str) -> Tensor:
    r"""The features as the similarity sees them: unit rows for cosine."""
    if similarity == 'cosine':
        return torch.nn.functional.normalize(x, p=2.0, dim=-1, eps=NORM_EPS)
    return x


def _chunks(num: int, chunk_size: int):
    for start in range(0, num, chunk_size):
        yield start, min(start + chunk_size, num)


def row_csr(row: Tensor, col: Tensor, num_rows: int, num_cols: int,
            values: Tensor) -> Optional[Tensor]:
    r"""The CSR matrix of edges sorted by :obj:`row` (32-bit ids where they
    fit), or :obj:`None` if the rows are not sorted, the dtype has no
    sparse kernels or :func:`torch.compile` is tracing (it cannot build
    sparse tensors; the callers fall back to dense gathers)."""
    if values.dtype not in (torch.float32, torch.float64) or \
            row.numel() == 0 or torch.compiler.is_compiling():
        return None
    if row.numel() > 1 and not bool((row[1:] >= row[:-1]).all()):
        return None
    ids = torch.int32 if max(row.numel(), num_rows, num_cols) < 2**31 - 1 \
        else torch.long
    rowptr = torch.zeros(num_rows + 1, dtype=ids, device=row.device)
    torch.cumsum(torch.bincount(row, minlength=num_rows), 0, out=rowptr[1:])
    return torch.sparse_csr_tensor(rowptr, col.to(ids), values,
                                   (num_rows, num_cols),
                                   check_invariants=False)


class _EdgeReduce(torch.autograd.Function):
    r"""``out[e] = sum_f op(x[row[e], f], x[col[e], f])`` in edge chunks.

    ``op`` is the product (dot) or the squared difference (squared distance).
    The backward recomputes the gathered rows chunk by chunk instead of saving
    them, which is what keeps memory at ``O(|E| + N d)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, row: Tensor, col: Tensor, sqdist: bool,
                chunk_size: int) -> Tensor:
        num_nodes = x.size(0)
        pattern = None if sqdist else row_csr(row, col, num_nodes, num_nodes,
                                              x.new_zeros(row.numel()))
        ctx.save_for_backward(x, row, col)
        ctx.sqdist, ctx.chunk_size = sqdist, chunk_size
        ctx.sorted = pattern is not None
        if pattern is not None:
            return torch.sparse.sampled_addmm(pattern, x, x.t(),
                                              beta=0.0).values()
        out = x.new_empty(row.numel())
        for s, e in _chunks(row.numel(), chunk_size):
            a, b = x[row[s:e]], x[col[s:e]]
            out[s:e] = ((a - b)**2).sum(-1) if sqdist else (a * b).sum(-1)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, row, col = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0] and ctx.sorted:
            g = row_csr(row, col, x.size(0), x.size(0), grad_out.contiguous())
            grad_x = torch.sparse.mm(g, x) + torch.sparse.mm(g.t(), x)
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
        return grad_x, None, None, None, None


def edge_chunk_size(dim: int, budget_bytes: int = 64 * 2**20,
                    element_size: int = 4) -> int:
    return max(1024, budget_bytes // max(1, 2 * dim * element_size))


def edge_reduce(x: Tensor, edge_index: Tensor, sqdist: bool = False,
                chunk_size: Optional[int] = None) -> Tensor:
    r"""Edge-wise dot product (or squared distance) of the rows of ``x``."""
    if chunk_size is None:
        chunk_size = edge_chunk_size(x.size(-1), element_size=x.element_size())
    return _EdgeReduce.apply(x, edge_index[0], edge_index[1], sqdist,
                             chunk_size)


def edge_similarity(x: Tensor, edge_index: Tensor, similarity: str,
                    score_map: str = 'auto', gamma: Optional[float] = None,
                    prepared: bool = False) -> Tensor:
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

    Returns:
        Scores :math:`(|\mathcal{E}|,)`.
    """
    score_map = resolve_score_map(score_map, similarity)
    if similarity == 'rbf':
        s = torch.exp(-default_gamma(x, gamma) *
                      edge_reduce(x, edge_index, sqdist=True))
    else:
        z = x if prepared else prepare(x, similarity)
        s = edge_reduce(z, edge_index)
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

