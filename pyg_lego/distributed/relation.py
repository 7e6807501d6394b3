r"""Relation scores of row-partitioned views, on :mod:`torch.distributed`:
each rank scores its rows of the shared pattern."""
import zlib
from functools import reduce
from typing import List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from pyg_lego.data.calibration import (ADAPTIVE_MAPS, SCALE_EPS, SNF_MU,
                                       neighbour_distances)
from pyg_lego.data.similarity import (SIMILARITIES, edge_similarity,
                                      resolve_score_map)
from pyg_lego.data.validation import check_gamma, check_k
from pyg_lego.distributed.halo import (CommStats, Exchange, LocalGraph,
                                       check_edges, edge_summary, node_halo,
                                       record)
from pyg_lego.distributed.knn import (_BAD_VIEWS, _DTYPES, _MESSAGES,
                                      _MISMATCHED_ROWS, _OK, _device_of,
                                      _feature_code, _gather_rows,
                                      _group_info)


def _crc(value) -> int:
    return zlib.crc32(repr(value).encode())


def _adaptive(sims: List[Tensor], graph: LocalGraph, local_index: Tensor,
              halo: Exchange, k: int, score_map: str, stats: CommStats
              ) -> List[Tensor]:
    r"""The adaptive maps of :func:`~pyg_lego.data.calibration.
    adaptive_score_map` on the rank's edges: each own node's bandwidths
    come from its own row (the rank holds all its edges), the halo's from
    their owners, every view's in one exchange."""
    sq = [(2.0 - 2.0 * s).clamp_min(0.0) for s in sims]
    # The floor keeps the gradient of the scales finite at distance 0.
    dist = [d.clamp_min(SCALE_EPS**2).sqrt() for d in sq]
    own = slice(graph.start, graph.start + graph.size)
    scales = torch.cat([torch.stack(neighbour_distances(
        d, local_index, graph.num_nodes, k), 1)[own] for d in dist], 1)
    scales = graph.nodes(scales, halo(scales, stats, 'scores/scales'))
    row, col = local_index
    out = []
    for m, (sq_m, dist_m) in enumerate(zip(sq, dist)):
        kth, mean = scales[:, 2 * m], scales[:, 2 * m + 1]
        if score_map == 'local':
            scale = kth.clamp_min(SCALE_EPS)
            out.append(torch.exp(-sq_m / (scale[row] * scale[col])))
            continue
        eps = ((mean[row] + mean[col] + dist_m) / 3.0).clamp_min(SCALE_EPS)
        out.append(torch.exp(-sq_m / (2.0 * SNF_MU**2 * eps**2)))
    return out


def partitioned_relation_scores(views: Mapping[str, Tensor],
                                edge_index: Tensor,
                                similarity: str = 'cosine',
                                score_map: str = 'auto',
                                gamma: Optional[float] = None,
                                k: Optional[int] = None, group=None
                                ) -> Tuple[Tensor, CommStats]:
    r"""Every view's relation score on this rank's edges of the shared
    pattern: the rows of :func:`~pyg_lego.data.relation_scores` that belong
    to this rank,

    .. math::
        \mathbf{R}_{e, m} = \phi\big(\mathrm{sim}_m(\mathbf{x}^{(m)}_i,
        \mathbf{x}^{(m)}_j)\big), \qquad e = (i, j) \in \mathcal{E}_r,

    from row-partitioned features (rank :math:`r` holds nodes
    :math:`o_r, \dots, o_r + n_r - 1`, see
    :func:`~pyg_lego.distributed.partitioned_knn`) and the rank's rows
    :math:`\mathcal{E}_r` of the pattern
    (:func:`~pyg_lego.distributed.partitioned_pattern`). The features of the
    endpoints :math:`j` held by other ranks (the halo) are fetched once, all
    views together, by :func:`~torch.distributed.all_to_all_single` of only
    those rows, after one exchange of how many and which rows each rank
    needs; each edge is then scored as :func:`~pyg_lego.data.relation_scores`
    scores it (the same edge-wise products on the same rows). The scores
    are differentiable with respect to the local features: the backward
    pass returns the halo rows' gradients to their owners by the same
    exchange, so every rank must run it.

    Every score map is supported. Those of the edge's two endpoints only
    (:obj:`"affine"`, :obj:`"clamp"`, :obj:`"raw"`; the RBF bandwidth
    :math:`1 / d_m` by default, as there) need nothing more; the adaptive
    maps :obj:`"local"` and :obj:`"snf"` set each node's bandwidths from its
    :obj:`k` nearest neighbours on the pattern: a rank finds its own nodes'
    from their rows, which it holds whole, and fetches the halo's from their
    owners in one more exchange (two numbers per node and view).

    Errors (bad features or edges on one rank, or ranks that disagree on the
    views, the options or on whether a gradient is taken) are raised on
    every rank.

    Args:
        views (Mapping[str, torch.Tensor]): View name -> this rank's rows of
            its features :math:`(n_r, d_m)`, the same names, widths and
            dtypes in the same order on every rank.
        edge_index (torch.Tensor): The rank's edges :math:`(2, E_r)` in
            global ids, coalesced (sorted by row, then column).
        similarity (str, optional): :obj:`"cosine"`, :obj:`"dot"` or
            :obj:`"rbf"`. (default: :obj:`"cosine"`)
        score_map (str, optional): :obj:`"auto"`, :obj:`"affine"`,
            :obj:`"clamp"`, :obj:`"raw"`, :obj:`"local"` or :obj:`"snf"`,
            see :func:`~pyg_lego.build_relation_graph`.
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth; :math:`1 / d_m` if
            :obj:`None`. (default: :obj:`None`)
        k (int, optional): The neighbours that set the bandwidths of the
            adaptive maps (the pattern's :obj:`k`); the other maps ignore
            it. (default: :obj:`None`)
        group (torch.distributed.ProcessGroup, optional): The process group;
            the default group if :obj:`None`. (default: :obj:`None`)

    Returns:
        :obj:`(edge_attr, stats)`: the scores :math:`(E_r, M)` in the order
        of :obj:`edge_index`, and the bytes this rank sent by stage:
        :obj:`"checks"`, :obj:`"scores/requests"` (the halo's counts and
        ids), :obj:`"scores/features"`, :obj:`"scores/scales"` (adaptive
        maps), and their :obj:`".backward"` stages once a backward pass has
        run.
    """
    what = 'partitioned_relation_scores'
    rank, world = _group_info(group)
    good = isinstance(views, Mapping) and len(views) > 0 and all(
        isinstance(name, str) and name for name in views)
    tensors = list(views.values()) if good else []
    sim_ok = similarity in SIMILARITIES
    codes = [_feature_code(x, similarity if sim_ok else 'dot', True)
             for x in tensors]
    code = _BAD_VIEWS if not good else next(
        (c for c in codes if c != _OK), _OK)
    if code == _OK and len({x.size(0) for x in tensors}) > 1:
        code = _MISMATCHED_ROWS
    ok = code == _OK
    layout = [(x.size(1), _DTYPES.index(x.dtype)) for x in tensors] if ok \
        else []
    grad = ok and torch.is_grad_enabled() and any(
        x.requires_grad for x in tensors)
    row = [code, tensors[0].size(0) if ok else 0,
           _crc(list(views)) if good else 0, _crc(layout),
           _crc((similarity, score_map, gamma, k)), int(grad)] + \
        edge_summary(edge_index)
    device = _device_of(tensors[0] if tensors else None)
    table = _gather_rows(row, group, device)
    stats: CommStats = {}
    record(stats, 'checks', 8 * len(row) * (world - 1))
    for r, c in enumerate(table[:, 0].tolist()):
        if c != _OK:
            raise ValueError(f"{what}: views on rank {r} {_MESSAGES[c]}")
    for c, name in ((2, 'view names in the same order'),
                    (3, 'width d_m and dtype of each view'),
                    (4, 'similarity, score_map, gamma and k'),
                    (5, 'gradient mode: features that require grad on one '
                        'rank need a backward pass on all')):
        if len(set(table[:, c].tolist())) > 1:
            raise ValueError(f"{what}: every rank must pass the same {name}")
    sizes = table[:, 1].tolist()
    check_edges(table[:, 6:], sizes, what)
    score_map = resolve_score_map(score_map, similarity)
    check_gamma(gamma)
    adaptive = score_map in ADAPTIVE_MAPS
    if adaptive:
        if k is None:
            raise ValueError(f"{what}: score_map={score_map!r} needs k, the "
                             f"number of neighbours that set each node's "
                             f"bandwidth")
        k = min(check_k(k), sum(sizes) - 1)
    graph = LocalGraph(edge_index, sizes, rank)
    halo = node_halo(graph.halo, sizes, rank, group, stats,
                     'scores/requests')
    # One exchange for all views, in their common dtype (the dtype
    # relation_scores scores them in).
    dtype = reduce(torch.promote_types, [x.dtype for x in tensors])
    own = torch.cat([x.to(dtype) for x in tensors], 1)
    remote = halo(own, stats, 'scores/features')
    local_index = torch.stack([graph.row, graph.col])
    cols, start = [], 0
    for x in tensors:
        end = start + x.size(1)
        z = graph.nodes(own[:, start:end], remote[:, start:end])
        cols.append(edge_similarity(z, local_index, similarity,
                                    'raw' if adaptive else score_map, gamma))
        start = end
    if adaptive:
        cols = _adaptive(cols, graph, local_index, halo, k, score_map, stats)
    return torch.stack(cols, dim=-1), stats
