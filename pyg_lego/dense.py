r"""The LEGO method on dense :math:`N \times N` tensors, written as plainly as
possible. It is the test oracle of the sparse code and the baseline of the
benchmarks; it is only meant for small :math:`N`.
"""
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from pyg_lego.data.calibration import ADAPTIVE_MAPS, SCALE_EPS, SNF_MU
from pyg_lego.data.relation import GivenGraph
from pyg_lego.data.similarity import (apply_score_map, default_gamma,
                                      resolve_score_map)
from pyg_lego.nn.fusion import GEOMETRIC_EPS, LEGOFusion

NORM_EPS = 1e-12


def unit_rows(x: Tensor) -> Tensor:
    norm = x.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(NORM_EPS)
    return x / norm


def similarity_matrix(x: Tensor, similarity: str = 'cosine',
                      gamma: Optional[float] = None) -> Tensor:
    r"""Raw pairwise similarity :math:`(N, N)`."""
    if similarity == 'cosine':
        z = unit_rows(x)
        return z @ z.t()
    if similarity == 'dot':
        return x @ x.t()
    if similarity == 'rbf':
        diff = x.unsqueeze(1) - x.unsqueeze(0)
        return torch.exp(-default_gamma(x, gamma) * diff.pow(2).sum(-1))
    raise ValueError(f"unknown similarity {similarity!r}")


def knn_mask(x: Tensor, k: int, similarity: str = 'cosine',
             gamma: Optional[float] = None) -> Tensor:
    r"""Symmetric kNN adjacency (no diagonal) of one view, :math:`(N, N)`
    booleans; :obj:`k >= N - 1` gives the complete graph."""
    n = x.size(0)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    if k >= n - 1:
        return off_diagonal
    s = similarity_matrix(x, similarity, gamma).clone()
    s.fill_diagonal_(float('-inf'))
    mask = torch.zeros(n, n, dtype=torch.bool, device=x.device)
    mask.scatter_(1, s.topk(k, dim=1).indices, True)
    return mask | mask.t()


def given_matrix(g: GivenGraph, num_nodes: int, dtype: torch.dtype) -> Tensor:
    r"""Symmetric dense weights of a given graph (largest weight per pair),
    with :obj:`self_loop_weight` on the diagonal where it has none."""
    w = g.edge_weight
    if w is None:
        w = torch.ones(g.edge_index.size(1), dtype=dtype)
    out = torch.zeros(num_nodes, num_nodes, dtype=dtype)
    seen = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
    for (i, j), v in zip(g.edge_index.t().tolist(), w.tolist()):
        for a, b in ((i, j), (j, i)):
            out[a, b] = v if not seen[a, b] else max(float(out[a, b]), v)
            seen[a, b] = True
    for i in range(num_nodes):
        if not seen[i, i]:
            out[i, i] = g.self_loop_weight
    return out


def relation_graph(views: Mapping[str, Union[Tensor, GivenGraph]], k: int,
                   similarity: str = 'cosine', score_map: str = 'auto',
                   gamma: Optional[float] = None, self_loops: bool = True,
                   num_nodes: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    r"""Dense relation graphs.

    Returns:
        :obj:`(mask, R)`: the shared pattern :math:`(N, N)` (booleans) and
        the scores :math:`(M, N, N)`, zero outside the pattern.
    """
    score_map = resolve_score_map(score_map, similarity)
    feats = [v for v in views.values() if not isinstance(v, GivenGraph)]
    n = feats[0].size(0) if feats else num_nodes
    dtype = feats[0].dtype if feats else torch.get_default_dtype()
    mask = torch.zeros(n, n, dtype=torch.bool)
    for v in views.values():
        if isinstance(v, GivenGraph):
            seen = torch.zeros(n, n, dtype=torch.bool)
            seen[v.edge_index[0], v.edge_index[1]] = True
            mask |= (seen | seen.t()) & ~torch.eye(n, dtype=torch.bool)
        else:
            mask |= knn_mask(v, k, similarity, gamma)
    if self_loops:
        mask |= torch.eye(n, dtype=torch.bool)
    scores = []
    for v in views.values():
        if isinstance(v, GivenGraph):
            r = given_matrix(v, n, dtype)
        elif score_map in ADAPTIVE_MAPS:
            r = adaptive_matrix(similarity_matrix(v, similarity, gamma), mask,
                                min(k, n - 1), score_map)
        else:
            r = apply_score_map(similarity_matrix(v, similarity, gamma),
                                score_map)
        scores.append(torch.where(mask, r, torch.zeros_like(r)))
    return mask, torch.stack(scores)


def adaptive_matrix(s: Tensor, mask: Tensor, k: int, score_map: str) -> Tensor:
    r"""The adaptive score maps of :mod:`pyg_lego.data.calibration` on a
    dense cosine matrix :obj:`s`, each node's scales from its :obj:`k`
    nearest neighbours among its entries of the pattern :obj:`mask`
    (diagonal excluded), node by node."""
    n = s.size(0)
    sq = (2.0 - 2.0 * s).clamp_min(0.0)
    dist = sq.clamp_min(SCALE_EPS**2).sqrt()
    off = mask & ~torch.eye(n, dtype=torch.bool, device=s.device)
    kth, mean = [], []
    for i in range(n):
        near = dist[i][off[i]].sort().values[:k]
        kth.append(near[-1] if near.numel() else dist.new_zeros(()))
        mean.append(near.mean() if near.numel() else dist.new_zeros(()))
    kth, mean = torch.stack(kth), torch.stack(mean)
    if score_map == 'local':
        scale = kth.clamp_min(SCALE_EPS)
        return torch.exp(-sq / (scale[:, None] * scale[None, :]))
    eps = ((mean[:, None] + mean[None, :] + dist) / 3.0).clamp_min(SCALE_EPS)
    return torch.exp(-sq / (2.0 * SNF_MU**2 * eps**2))


def normalize(r: Tensor, mask: Tensor) -> Tensor:
    r""":math:`\mathbf{D}^{-1/2} \mathbf{R} \mathbf{D}^{-1/2}` of one view
    (zero where the degree is not positive)."""
    r = r * mask
    deg = r.sum(1)
    dinv = torch.where(deg > 0, deg.clamp_min(torch.finfo(deg.dtype).tiny)
                       .rsqrt(), torch.zeros_like(deg))
    return dinv.unsqueeze(1) * r * dinv.unsqueeze(0)


def graph_powers(r: Tensor, mask: Tensor, P: int, mode: str = 'masked',
                 xs: Optional[Sequence[Tensor]] = None, order0: str = 'self',
                 similarity: str = 'cosine', score_map: str = 'auto',
                 gamma: Optional[float] = None) -> Tensor:
    r"""Orders :math:`0..P` of every view, :math:`(M, P + 1, N, N)`, zero
    outside the pattern."""
    score_map = resolve_score_map(score_map, similarity)
    n = mask.size(0)
    eye = torch.eye(n, dtype=r.dtype) * mask
    out: List[Tensor] = []
    for m in range(r.size(0)):
        rm = r[m] * mask
        a = normalize(rm, mask)
        orders = []
        if mode == 'elementwise':
            orders.append(mask.to(r.dtype) if order0 == 'all' else eye)
            for p in range(1, P + 1):
                orders.append(rm**p * mask)
        elif mode == 'masked':
            orders.append(eye)
            if P >= 1:
                orders.append(a)
            for p in range(2, P + 1):
                orders.append((orders[-1] @ a) * mask)
        elif mode == 'propagated':
            x = xs[m]
            g = default_gamma(x, gamma)
            z = unit_rows(x) if similarity == 'cosine' else x
            for p in range(P + 1):
                if p > 0:
                    z = a @ z
                s = similarity_matrix(z, similarity, g)
                orders.append(apply_score_map(s, score_map) * mask)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        out.append(torch.stack(orders))
    return torch.stack(out)


def fuse(powers: Tensor, fusion: LEGOFusion,
         mask: Optional[Tensor] = None) -> Tensor:
    r"""The fused graphs :math:`(C, N, N)` of :obj:`powers`
    :math:`(M, P + 1, N, N)` with the coefficients of :obj:`fusion`. The
    geometric fusion is positive everywhere, so it needs the pattern
    :obj:`mask` :math:`(N, N)` to be zero off it."""
    if fusion.kind == 'geometric' and mask is None:
        raise ValueError("the geometric fusion needs the pattern mask")
    w = fusion.weight.to(powers.dtype)
    num_views, num_orders = powers.size(0), powers.size(1)
    out = []
    for c in range(fusion.out_channels):
        g = torch.zeros_like(powers[0, 0])
        if fusion.kind == 'linear':
            for m in range(num_views):
                for p in range(num_orders):
                    g = g + w[c, m, p] * powers[m, p]
        elif fusion.kind == 'geometric':
            g = torch.ones_like(g)
            for m in range(num_views):
                for p in range(num_orders):
                    base = powers[m, p].clamp_min(0.0) + GEOMETRIC_EPS
                    g = g * base.pow(w[c, m, p])
            g = g * mask.to(g.dtype)
        elif fusion.full:
            for p in range(num_orders):
                for q in range(num_orders):
                    g = g + w[c, p, q] * powers[0, p] * powers[1, q]
        else:
            for r in range(fusion.rank):
                prod = torch.ones_like(g)
                for m in range(num_views):
                    factor = torch.zeros_like(g)
                    for p in range(num_orders):
                        factor = factor + w[c, r, m, p] * powers[m, p]
                    prod = prod * factor
                g = g + prod
        out.append(g)
    return torch.stack(out)


def topk(g: Tensor, mask: Tensor, k: int) -> Tensor:
    r""":class:`~pyg_lego.nn.TopKSparsify` on dense fused graphs
    :math:`(C, N, N)` (or one :math:`(N, N)`): each row keeps its :obj:`k`
    largest entries on the pattern :obj:`mask` off the diagonal (ties: the
    lower column, the earlier edge of a coalesced pattern), made symmetric,
    and the diagonal."""
    if g.dim() == 3:
        return torch.stack([topk(c, mask, k) for c in g])
    n = g.size(0)
    eye = torch.eye(n, dtype=torch.bool, device=g.device)
    candidate = mask.bool() & ~eye
    key = g.detach().masked_fill(~candidate, float('-inf'))
    order = torch.argsort(key, dim=1, descending=True, stable=True)[:, :k]
    chosen = torch.zeros_like(candidate)
    chosen.scatter_(1, order, True)
    chosen &= candidate
    keep = chosen | chosen.T | (eye & mask.bool())
    return g * keep.to(g.dtype)
