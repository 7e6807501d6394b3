r"""Graph power expansion and LEGO fusion of a row-partitioned relation
graph, on :mod:`torch.distributed`: each rank expands and fuses the edges of
its own rows."""
import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from pyg_lego.data.calibration import ADAPTIVE_MAPS
from pyg_lego.data.similarity import (csr_pattern, csr_rowptr, default_gamma,
                                      edge_similarity, prepare,
                                      resolve_score_map)
from pyg_lego.data.validation import check_gamma
from pyg_lego.distributed.halo import (_EDGES_OK, CommStats, LocalGraph,
                                       check_edges,
                                       edge_halo, edge_summary, node_halo,
                                       record, sum_gradients)
from pyg_lego.distributed.knn import _DTYPES, _device_of, _gather_rows, \
    _group_info
from pyg_lego.distributed.relation import _crc
from pyg_lego.nn.fusion import LEGOFusion
from pyg_lego.nn.graph_power import MODES, MaskedPower
from pyg_lego.nn.path_index import DEFAULT_PATH_CHUNK, sort_by_closing
from pyg_lego.nn.spmm import csr_matmul

_OK, _NOT_TENSOR, _SHAPE, _NOT_FLOAT, _NOT_FINITE, _NUM_LOCAL, _XS = \
    range(7)
_MESSAGES = {
    _NOT_TENSOR: "is not a torch.Tensor of scores [E_r, M]",
    _SHAPE: "must have shape [E_r, M], one row per edge of edge_index",
    _NOT_FLOAT: "must be floating point",
    _NOT_FINITE: "contains NaN or Inf",
    _NUM_LOCAL: "num_local must be a positive integer (the rank's nodes)",
    _XS: "mode='propagated' needs xs: every view's features [n_r, d_m] "
         "(floating point, finite), one per score column",
}


class _PowerPlan:
    r"""What rank :math:`r` needs for the powers of its rows: its local
    graph and the exchange of its halo nodes' rows; for the masked mode
    from :math:`P = 2` also the exchange of their edges and the two-step
    paths :math:`i \to l \to j` of its rows :math:`i`, as ids into its own
    edges followed by the halo's edges; for the propagated mode the CSR
    form of its rows over its local nodes (:obj:`None` for dtypes without
    sparse kernels)."""

    def __init__(self, edge_index: Tensor, sizes: Sequence[int], rank: int,
                 group, stats: CommStats, mode: str, P: int,
                 dtype: torch.dtype, chunk_size: int = DEFAULT_PATH_CHUNK):
        self.graph = graph = LocalGraph(edge_index, sizes, rank)
        self.nodes = node_halo(graph.halo, sizes, rank, group, stats,
                               'powers/requests')
        if mode == 'propagated':
            self.pattern = csr_pattern(graph.row, graph.col, graph.num_nodes,
                                       graph.num_nodes, dtype)
        if mode != 'masked' or P < 2:
            return
        rowptr = csr_rowptr(graph.row - graph.start, graph.size)
        self.rows, halo_deg = edge_halo(self.nodes, rowptr, stats,
                                        'powers/structure')
        halo_col = self.rows(edge_index[1], stats, 'powers/structure')
        self.paths = self._paths(edge_index, rowptr, halo_deg, halo_col,
                                 chunk_size)

    def _paths(self, edge_index: Tensor, rowptr: Tensor, halo_deg: Tensor,
               halo_col: Tensor, chunk_size: int) -> Tensor:
        g, device = self.graph, edge_index.device
        num_own = edge_index.size(1)
        # Where each local node's row starts among [own edges, halo edges].
        start = torch.empty(g.num_nodes, dtype=torch.long, device=device)
        count = torch.empty_like(start)
        own = torch.arange(g.start, g.start + g.size, device=device)
        halo = g.local(g.halo)
        start[own], count[own] = rowptr[:-1], rowptr.diff()
        start[halo] = num_own + torch.cumsum(halo_deg, 0) - halo_deg
        count[halo] = halo_deg
        col_all = torch.cat([edge_index[1], halo_col])
        n = g.num_global
        key = edge_index[0] * n + edge_index[1]
        cnt_all = count[g.col]
        ends = torch.cumsum(cnt_all, 0)
        total = int(ends[-1]) if num_own > 0 else 0
        cuts = torch.searchsorted(ends, torch.arange(
            chunk_size, max(chunk_size, total), chunk_size, device=device),
            right=True)
        bounds = torch.unique(torch.cat([cuts.new_tensor([0, num_own]),
                                         cuts])).tolist()
        parts = []
        for s, t in zip(bounds[:-1], bounds[1:]):
            cnt = cnt_all[s:t]
            size = int(cnt.sum())
            e1 = torch.arange(s, t, device=device).repeat_interleave(
                cnt, output_size=size)
            # The first candidate of e1 is the first edge of row l.
            base = start[g.col[s:t]] - (torch.cumsum(cnt, 0) - cnt)
            e2 = torch.arange(size, device=device) + \
                base.repeat_interleave(cnt, output_size=size)
            want = edge_index[0][e1] * n + col_all[e2]
            pos = torch.searchsorted(key, want).clamp_max(num_own - 1)
            hit = (key[pos] == want).nonzero().squeeze(1)
            parts.append(torch.stack([e1[hit], e2[hit], pos[hit]]))
        if not parts:
            return torch.empty(3, 0, dtype=torch.long, device=device)
        # Sorted by closing edge and then by first edge, as two_hop_paths
        # sorts them, so that each sum runs in the single process's order.
        return sort_by_closing(torch.cat(parts, 1))


def _identity(edge_index: Tensor, like: Tensor) -> Tensor:
    loop = (edge_index[0] == edge_index[1]).to(like.dtype).unsqueeze(-1)
    return loop.expand_as(like)


def _normalised(plan: _PowerPlan, edge_attr: Tensor, stats: CommStats
                ) -> Tensor:
    r""":math:`\mathbf{A} = \mathbf{D}^{-1/2} \mathbf{R} \mathbf{D}^{-1/2}`
    on the rank's edges."""
    g = plan.graph
    # The rank owns every edge of its rows, so their degrees are complete;
    # the columns' come from their owners (relation_norm's expressions).
    deg = edge_attr.new_zeros(g.size, edge_attr.size(1))
    deg = deg.index_add(0, g.row - g.start, edge_attr)
    tiny = torch.finfo(deg.dtype).tiny
    dinv = torch.where(deg > 0, deg.clamp_min(tiny).rsqrt(),
                       torch.zeros_like(deg))
    dinv = g.nodes(dinv, plan.nodes(dinv, stats, 'powers/degrees'))
    return dinv[g.row] * edge_attr * dinv[g.col]


def _masked(plan: _PowerPlan, edge_index: Tensor, edge_attr: Tensor, P: int,
            stats: CommStats) -> Tensor:
    orders = [_identity(edge_index, edge_attr)]
    if P == 0:
        return torch.stack(orders, dim=-1)
    a = _normalised(plan, edge_attr, stats)
    orders.append(a)
    if P >= 2:
        # A is the same for every order, so one exchange of the halo's rows
        # of A serves them all: each order's rows are then the previous
        # order's own rows times A, with no further communication.
        a_all = torch.cat([a, plan.rows(a, stats, 'powers/rows')])
        wide = a_all if a.dtype in (torch.float32, torch.float64) else \
            a_all.float()
        higher = MaskedPower.apply(wide, plan.paths, P)[:a.size(0)]
        orders.extend(higher.to(a.dtype).unbind(-1))
    return torch.stack(orders, dim=-1)


def _product(plan: _PowerPlan, z: Tensor, weight: Tensor) -> Tensor:
    r"""The rank's rows of :math:`\mathbf{A} \mathbf{Z}`, from the local
    nodes' rows of :math:`\mathbf{Z}`."""
    g = plan.graph
    if plan.pattern is None:  # no sparse kernels: gather and scatter
        return z.new_zeros(g.size, z.size(1)).index_add(
            0, g.row - g.start, weight.unsqueeze(-1) * z[g.col])
    return csr_matmul(plan.pattern, z, weight)[g.start:g.start + g.size]


def _propagated(plan: _PowerPlan, edge_attr: Tensor, xs: Sequence[Tensor],
                P: int, similarity: str, score_map: str,
                gamma: Optional[float], stats: CommStats) -> Tensor:
    a = _normalised(plan, edge_attr, stats)
    g, pattern = plan.graph, plan.pattern
    local_index = torch.stack([g.row, g.col])
    widths = [x.size(1) for x in xs]
    gammas = [default_gamma(x, gamma) for x in xs]
    weights = [a[:, m].contiguous() for m in range(len(xs))]
    z = [prepare(x, similarity) for x in xs]
    scores = [[] for _ in xs]
    for p in range(P + 1):
        # One exchange per order, all views together: the halo's rows of
        # Z^(p) serve both the scores of order p and the product A Z^(p).
        remote = plan.nodes(torch.cat(z, 1), stats, 'powers/features')
        z = [g.nodes(own, halo)
             for own, halo in zip(z, remote.split(widths, 1))]
        for m, z_m in enumerate(z):
            scores[m].append(edge_similarity(
                z_m, local_index, similarity, score_map, gammas[m],
                prepared=p == 0, pattern=pattern))
        if p < P:
            z = [_product(plan, z_m, w) for z_m, w in zip(z, weights)]
    return torch.stack([torch.stack(view, dim=-1) for view in scores], 1)


def _elementwise(edge_index: Tensor, edge_attr: Tensor, P: int,
                 order0: str) -> Tensor:
    first = torch.ones_like(edge_attr) if order0 == 'all' else \
        _identity(edge_index, edge_attr)
    return torch.stack([first] + [edge_attr**p for p in range(1, P + 1)],
                       dim=-1)


def _check_options(P, mode: str, order0: str, similarity: str,
                   score_map: str, gamma: Optional[float]) -> str:
    r"""Raises on bad options; returns the resolved score map."""
    if isinstance(P, bool) or not isinstance(P, numbers.Integral) or P < 0:
        raise ValueError(f"P (the highest order) must be an integer >= 0, "
                         f"got {P!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if order0 not in ('self', 'all'):
        raise ValueError(f"order0 must be 'self' or 'all', got {order0!r}")
    score_map = resolve_score_map(score_map, similarity)
    check_gamma(gamma)
    if mode == 'propagated' and score_map in ADAPTIVE_MAPS:
        raise ValueError(f"the propagated mode scores propagated features "
                         f"edge by edge and cannot apply "
                         f"score_map={score_map!r}; use 'elementwise' or "
                         f"'masked'")
    return score_map


def _xs_code(xs, num_views: int, num_local: int) -> int:
    if not isinstance(xs, Sequence) or len(xs) != num_views:
        return _XS
    for x in xs:
        if not isinstance(x, Tensor) or x.dim() != 2 or \
                x.size(0) != num_local or x.dtype not in _DTYPES or \
                x.size(1) == 0 or not bool(torch.isfinite(x).all()):
            return _XS
    return _OK


def _attr_code(edge_attr, num_edges: int) -> int:
    if not isinstance(edge_attr, Tensor):
        return _NOT_TENSOR
    if edge_attr.dim() != 2 or edge_attr.size(0) != num_edges:
        return _SHAPE
    if edge_attr.dtype not in _DTYPES:
        return _NOT_FLOAT
    if not bool(torch.isfinite(edge_attr).all()):
        return _NOT_FINITE
    return _OK


def _powers(edge_index: Tensor, edge_attr: Tensor, num_local: int, P: int,
            mode: str, order0: str, xs: Optional[Sequence[Tensor]],
            similarity: str, score_map: str, gamma: Optional[float], group,
            plan: Optional[_PowerPlan]
            ) -> Tuple[Tensor, CommStats, Optional[_PowerPlan]]:
    what = 'partitioned_graph_powers'
    rank, world = _group_info(group)
    edges = edge_summary(edge_index)
    code = _attr_code(edge_attr, edges[1]) if edges[0] == _EDGES_OK \
        else _OK
    if isinstance(num_local, bool) or \
            not isinstance(num_local, numbers.Integral) or num_local < 1:
        code, num_local = _NUM_LOCAL, 0
    ok = code == _OK and edges[0] == _EDGES_OK
    if ok and mode == 'propagated':
        code = _xs_code(xs, edge_attr.size(1), num_local)
        ok = code == _OK
    feats = list(xs) if ok and mode == 'propagated' else []
    layout = [(x.size(1), _DTYPES.index(x.dtype)) for x in feats]
    grad = ok and torch.is_grad_enabled() and (
        edge_attr.requires_grad or any(x.requires_grad for x in feats))
    row = [code, int(num_local),
           edge_attr.size(1) if ok else 0,
           _DTYPES.index(edge_attr.dtype) if ok else -1,
           _crc((P, mode, order0, similarity, score_map, gamma, layout)),
           int(grad)] + edges
    table = _gather_rows(row, group, _device_of(edge_attr))
    stats: CommStats = {}
    record(stats, 'checks', 8 * len(row) * (world - 1))
    for r, c in enumerate(table[:, 0].tolist()):
        if c in (_NUM_LOCAL, _XS):
            raise ValueError(f"{what}: on rank {r}, {_MESSAGES[c]}")
        if c != _OK:
            raise ValueError(f"{what}: edge_attr on rank {r} {_MESSAGES[c]}")
    sizes = table[:, 1].tolist()
    check_edges(table[:, 6:], sizes, what)
    for c, name in ((2, 'number of views M (score columns)'),
                    (3, 'dtype of the scores'),
                    (4, 'P, mode, order0, similarity, score_map, gamma and '
                        'feature widths and dtypes'),
                    (5, 'gradient mode: inputs that require grad on one '
                        'rank need a backward pass on all')):
        if len(set(table[:, c].tolist())) > 1:
            raise ValueError(f"{what}: every rank must pass the same {name}")
    score_map = _check_options(P, mode, order0, similarity, score_map, gamma)
    if mode == 'elementwise':
        return _elementwise(edge_index, edge_attr, P, order0), stats, None
    if plan is None and (P >= 1 or mode == 'propagated'):
        plan = _PowerPlan(edge_index, sizes, rank, group, stats, mode, P,
                          edge_attr.dtype)
    if mode == 'propagated':
        return _propagated(plan, edge_attr, xs, P, similarity, score_map,
                           gamma, stats), stats, plan
    return _masked(plan, edge_index, edge_attr, P, stats), stats, plan


def partitioned_graph_powers(edge_index: Tensor, edge_attr: Tensor,
                             num_local: int, P: int, mode: str = 'masked',
                             order0: str = 'self', *,
                             xs: Optional[Sequence[Tensor]] = None,
                             similarity: str = 'cosine',
                             score_map: str = 'auto',
                             gamma: Optional[float] = None, group=None
                             ) -> Tuple[Tensor, CommStats]:
    r"""The orders :math:`p = 0, \dots, P` of every view's relation graph on
    this rank's edges: the rows of :class:`~pyg_lego.nn.GraphPowerConv`'s
    output that belong to this rank, in all three modes.

    Rank :math:`r` owns nodes :math:`o_r, \dots, o_r + n_r - 1`
    (:obj:`num_local` :math:`= n_r`, in rank order) and every edge of their
    rows, so it computes their degrees on its own and fetches its halo
    nodes' :math:`\mathbf{D}^{-1/2}` (one exchange) for
    :math:`\mathbf{A}_m = \mathbf{D}_m^{-1/2} \mathbf{R}_m
    \mathbf{D}_m^{-1/2}`. The **masked** power

    .. math::
        \mathbf{R}^{(p)}_{m, ij} = \sum_{(i, l), (l, j), (i, j) \in
        \mathcal{E}} \mathbf{R}^{(p-1)}_{m, il} \, \mathbf{A}_{m, lj}

    needs, for a row :math:`i`, its own row of the previous order and the
    rows :math:`l` of :math:`\mathbf{A}_m` of its neighbours. These are the
    same for every order, so one exchange of the halo's rows of
    :math:`\mathbf{A}` (after one of their structure) serves every order
    :math:`p \ge 2`, and the orders are computed without further
    communication. The **propagated** mode,
    :math:`\mathbf{Z}^{(p)}_m = \mathbf{A}_m^p \hat{\mathbf{X}}_m` scored
    on the edges, takes one exchange of the halo's rows of
    :math:`\mathbf{Z}^{(p)}` (all views together) per order
    :math:`p = 0, \dots, P`: they serve both the scores of order :math:`p`
    and the product giving the rank's rows of :math:`\mathbf{Z}^{(p+1)}`.
    The **element-wise** mode is local. All exchanges are
    :func:`~torch.distributed.all_to_all_single` of only the rows needed.

    The result is differentiable with respect to :obj:`edge_attr` (and
    :obj:`xs`): the backward pass returns the gradients of the halo's rows
    to their owners, so every rank must run it. Errors are raised on every
    rank.

    Args:
        edge_index (torch.Tensor): The rank's edges :math:`(2, E_r)` in
            global ids, coalesced, e.g. from
            :func:`~pyg_lego.distributed.partitioned_pattern`.
        edge_attr (torch.Tensor): Their scores :math:`(E_r, M)`, e.g. from
            :func:`~pyg_lego.distributed.partitioned_relation_scores`.
        num_local (int): The rank's nodes :math:`n_r \ge 1`.
        P (int): Highest order :math:`P`.
        mode (str, optional): :obj:`"masked"`, :obj:`"propagated"` or
            :obj:`"elementwise"`. (default: :obj:`"masked"`)
        order0 (str, optional): Element-wise order :math:`0`, see
            :class:`~pyg_lego.nn.GraphPowerConv`. (default: :obj:`"self"`)
        xs (list of torch.Tensor, optional): The rank's rows of every
            view's features :math:`(n_r, d_m)`, in the order of the score
            columns (propagated mode only). (default: :obj:`None`)
        similarity (str, optional): The graph's similarity (propagated
            mode). (default: :obj:`"cosine"`)
        score_map (str, optional): The graph's score map (propagated mode).
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth (propagated mode).
            (default: :obj:`None`)
        group (torch.distributed.ProcessGroup, optional): The process group;
            the default group if :obj:`None`. (default: :obj:`None`)

    Returns:
        :obj:`(powers, stats)`: the orders :math:`(E_r, M, P + 1)` and the
        bytes this rank sent by stage: :obj:`"checks"`;
        :obj:`"powers/requests"` (the halo's ids) and
        :obj:`"powers/degrees"` (masked from :math:`P = 1`, propagated);
        :obj:`"powers/structure"` (the halo rows' lengths and columns) and
        :obj:`"powers/rows"` (their rows of :math:`\mathbf{A}`; masked from
        :math:`P = 2`); :obj:`"powers/features"` (propagated); and their
        :obj:`".backward"` stages once a backward pass has run.
    """
    powers, stats, _ = _powers(edge_index, edge_attr, num_local, P, mode,
                               order0, xs, similarity, score_map, gamma,
                               group, None)
    return powers, stats


class PartitionedLEGO(torch.nn.Module):
    r"""The expansion and fusion of :class:`~pyg_lego.LEGO` on a
    row-partitioned relation graph: every rank expands its rows' edges
    (:func:`partitioned_graph_powers`) and fuses them with a
    :class:`~pyg_lego.nn.LEGOFusion`, whose parameters are replicated on
    every rank,

    .. math::
        \mathbf{G}_{\mathcal{E}_r} = f_{\Theta}\big( \{
        \mathbf{R}^{(p)}_{m, \mathcal{E}_r} \}_{m \le M, \, p \le P} \big)
        \in \mathbb{R}^{E_r \times C}.

    With the same parameters (its :obj:`fusion.weight` is
    :class:`~pyg_lego.LEGO`'s, so a state dict loads either way), the fused
    weights are :class:`~pyg_lego.LEGO`'s with :obj:`topk=None` on this
    rank's edges; the top-:math:`k` sparsification of the fused graph is not
    partitioned. After :meth:`~torch.Tensor.backward` on every rank,
    :meth:`reduce_gradients` sums the parameters' gradients over the ranks,
    which gives the single process's gradient of the sum of the ranks'
    losses.

    Args:
        view_names (list of str): The views, in the order of the score
            columns.
        P (int, optional): Highest order :math:`P`. (default: :obj:`2`)
        mode (str, optional): Expansion mode, see
            :func:`partitioned_graph_powers`. (default: :obj:`"masked"`)
        fusion (str, optional): :obj:`"linear"` or :obj:`"polynomial"`.
            (default: :obj:`"linear"`)
        out_channels (int, optional): Fused graphs :math:`C`.
            (default: :obj:`1`)
        rank (int, optional): CP rank, see :class:`~pyg_lego.nn.LEGOFusion`.
            (default: :obj:`None`)
        order0 (str, optional): Element-wise order :math:`0`.
            (default: :obj:`"self"`)
        similarity (str, optional): The graph's similarity (propagated
            mode). (default: :obj:`"cosine"`)
        score_map (str, optional): The graph's score map (propagated mode).
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth (propagated mode).
            (default: :obj:`None`)
        cached (bool, optional): Keep the halo exchanges and the two-step
            paths of the first call (one fixed partitioned graph).
            (default: :obj:`False`)
        group (torch.distributed.ProcessGroup, optional): The process group;
            the default group if :obj:`None`. (default: :obj:`None`)

    Shapes:
        - **input:** the rank's edge indices :math:`(2, E_r)`, their scores
          :math:`(E_r, M)`, the rank's number of nodes :math:`n_r`, its rows
          of the view features :math:`[(n_r, d_m)]_m` *(propagated mode)*
        - **output:** fused edge weights :math:`(E_r, C)` and the
          communication stats of :func:`partitioned_graph_powers`
    """

    def __init__(self, view_names: Sequence[str], P: int = 2,
                 mode: str = 'masked', fusion: str = 'linear',
                 out_channels: int = 1, rank: Optional[int] = None,
                 order0: str = 'self', similarity: str = 'cosine',
                 score_map: str = 'auto', gamma: Optional[float] = None,
                 cached: bool = False, group=None):
        super().__init__()
        _check_options(P, mode, order0, similarity, score_map, gamma)
        self.view_names = list(view_names)
        self.P, self.mode, self.order0 = int(P), mode, order0
        self.similarity, self.score_map = similarity, score_map
        self.gamma = gamma
        self.cached, self.group = cached, group
        self.fusion = LEGOFusion(len(self.view_names), P,
                                 out_channels=out_channels, kind=fusion,
                                 rank=rank, view_names=self.view_names)
        self._plan: Optional[_PowerPlan] = None

    def reset_parameters(self):
        self.fusion.reset_parameters()
        self._plan = None

    def forward(self, edge_index: Tensor, edge_attr: Tensor, num_local: int,
                xs: Optional[Sequence[Tensor]] = None
                ) -> Tuple[Tensor, CommStats]:
        powers, stats, plan = _powers(edge_index, edge_attr, num_local,
                                      self.P, self.mode, self.order0, xs,
                                      self.similarity, self.score_map,
                                      self.gamma, self.group, self._plan)
        if self.cached:
            self._plan = plan
        return self.fusion(powers), stats

    def reduce_gradients(self) -> int:
        r"""Sums every parameter's gradient over the ranks (one
        :func:`~torch.distributed.all_reduce` of them all; a parameter
        without a gradient counts as zero). Returns the bytes reduced."""
        return sum_gradients(self.parameters(), self.group)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(views={self.view_names}, '
                f'P={self.P}, mode={self.mode!r}, '
                f'fusion={self.fusion.kind!r}, '
                f'out_channels={self.fusion.out_channels})')
