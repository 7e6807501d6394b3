r"""Relation scores of row-partitioned views, on :mod:`torch.distributed`:
each rank scores its rows of the shared pattern."""
import zlib
from functools import reduce
from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

from pyg_lego.data.calibration import ADAPTIVE_MAPS
from pyg_lego.data.similarity import (SIMILARITIES, edge_similarity,
                                      resolve_score_map)
from pyg_lego.data.validation import check_gamma
from pyg_lego.distributed.halo import (CommStats, LocalGraph, check_edges,
                                       edge_summary, node_halo, record)
from pyg_lego.distributed.knn import (_BAD_VIEWS, _DTYPES, _MESSAGES,
                                      _MISMATCHED_ROWS, _OK, _device_of,
                                      _feature_code, _gather_rows,
                                      _group_info)


def _crc(value) -> int:
    return zlib.crc32(repr(value).encode())


def partitioned_relation_scores(views: Mapping[str, Tensor],
                                edge_index: Tensor,
                                similarity: str = 'cosine',
                                score_map: str = 'auto',
                                gamma: Optional[float] = None, group=None
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

    Score maps that depend on the edge's two endpoints only are supported
    (:obj:`"affine"`, :obj:`"clamp"`, :obj:`"raw"`, :obj:`"auto"`; the RBF
    bandwidth :math:`1 / d_m` by default, as there). The adaptive maps
    :obj:`"local"` and :obj:`"snf"` set every node's bandwidth from its
    nearest neighbours on the pattern and raise :class:`NotImplementedError`.

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
            :obj:`"clamp"` or :obj:`"raw"`, see
            :func:`~pyg_lego.build_relation_graph`. (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth; :math:`1 / d_m` if
            :obj:`None`. (default: :obj:`None`)
        group (torch.distributed.ProcessGroup, optional): The process group;
            the default group if :obj:`None`. (default: :obj:`None`)

    Returns:
        :obj:`(edge_attr, stats)`: the scores :math:`(E_r, M)` in the order
        of :obj:`edge_index`, and the bytes this rank sent by stage:
        :obj:`"checks"`, :obj:`"scores/requests"` (the halo's counts and
        ids), :obj:`"scores/features"`, and :obj:`"scores/features.backward"`
        once a backward pass has run.
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
           _crc((similarity, score_map, gamma)), int(grad)] + \
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
                    (4, 'similarity, score_map and gamma'),
                    (5, 'gradient mode: features that require grad on one '
                        'rank need a backward pass on all')):
        if len(set(table[:, c].tolist())) > 1:
            raise ValueError(f"{what}: every rank must pass the same {name}")
    sizes = table[:, 1].tolist()
    check_edges(table[:, 6:], sizes, what)
    score_map = resolve_score_map(score_map, similarity)
    check_gamma(gamma)
    if score_map in ADAPTIVE_MAPS:
        raise NotImplementedError(
            f"{what}: score_map={score_map!r} sets each node's bandwidth "
            f"from its nearest neighbours on the pattern, which is not "
            f"partitioned yet; use 'affine', 'clamp' or 'raw', or "
            f"pyg_lego.data.relation_scores in one process")
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
        cols.append(edge_similarity(z, local_index, similarity, score_map,
                                    gamma))
        start = end
    return torch.stack(cols, dim=-1), stats
