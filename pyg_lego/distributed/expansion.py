r"""Graph power expansion and LEGO fusion of a row-partitioned relation
graph, on :mod:`torch.distributed`: each rank expands and fuses the edges of
its own rows."""
import numbers
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from pyg_lego.data.similarity import csr_rowptr
from pyg_lego.distributed.halo import (_EDGES_OK, CommStats, LocalGraph,
                                       check_edges,
                                       edge_halo, edge_summary, node_halo,
                                       record)
from pyg_lego.distributed.knn import _DTYPES, _device_of, _gather_rows, \
    _group_info
from pyg_lego.distributed.relation import _crc
from pyg_lego.nn.fusion import LEGOFusion
from pyg_lego.nn.graph_power import MaskedPower
from pyg_lego.nn.path_index import DEFAULT_PATH_CHUNK, sort_by_closing

#: The expansion modes that run partitioned.
PARTITIONED_MODES = ('masked', 'elementwise')

_OK, _NOT_TENSOR, _SHAPE, _NOT_FLOAT, _NOT_FINITE, _NUM_LOCAL = range(6)
_MESSAGES = {
    _NOT_TENSOR: "is not a torch.Tensor of scores [E_r, M]",
    _SHAPE: "must have shape [E_r, M], one row per edge of edge_index",
    _NOT_FLOAT: "must be floating point",
    _NOT_FINITE: "contains NaN or Inf",
    _NUM_LOCAL: "num_local must be a positive integer (the rank's nodes)",
}


class _PowerPlan:
    r"""What rank :math:`r` needs for the masked powers of its rows: its
    local graph, the exchanges of its halo's rows (nodes and edges), and
    the two-step paths :math:`i \to l \to j` of its rows :math:`i`, as ids
    into its own edges followed by the halo's edges."""

    def __init__(self, edge_index: Tensor, sizes: Sequence[int], rank: int,
                 group, stats: CommStats,
                 chunk_size: int = DEFAULT_PATH_CHUNK):
        self.graph = graph = LocalGraph(edge_index, sizes, rank)
        self.nodes = node_halo(graph.halo, sizes, rank, group, stats,
                               'powers/requests')
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


def _masked(plan: _PowerPlan, edge_index: Tensor, edge_attr: Tensor, P: int,
            stats: CommStats) -> Tensor:
    orders = [_identity(edge_index, edge_attr)]
    if P == 0:
        return torch.stack(orders, dim=-1)
    g = plan.graph
    # The rank owns every edge of its rows, so their degrees are complete;
    # the columns' come from their owners (relation_norm's expressions).
    deg = edge_attr.new_zeros(g.size, edge_attr.size(1))
    deg = deg.index_add(0, g.row - g.start, edge_attr)
    tiny = torch.finfo(deg.dtype).tiny
    dinv = torch.where(deg > 0, deg.clamp_min(tiny).rsqrt(),
                       torch.zeros_like(deg))
    dinv = g.nodes(dinv, plan.nodes(dinv, stats, 'powers/degrees'))
    a = dinv[g.row] * edge_attr * dinv[g.col]
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


def _elementwise(edge_index: Tensor, edge_attr: Tensor, P: int,
                 order0: str) -> Tensor:
    first = torch.ones_like(edge_attr) if order0 == 'all' else \
        _identity(edge_index, edge_attr)
    return torch.stack([first] + [edge_attr**p for p in range(1, P + 1)],
                       dim=-1)


def _check_options(P, mode: str, order0: str) -> None:
    if isinstance(P, bool) or not isinstance(P, numbers.Integral) or P < 0:
        raise ValueError(f"P (the highest order) must be an integer >= 0, "
                         f"got {P!r}")
    if mode == 'propagated':
        raise NotImplementedError(
            "mode='propagated' is not partitioned yet (it needs one halo "
            "exchange of the propagated features per order); use "
            f"mode='masked' or 'elementwise' (partitioned: "
            f"{PARTITIONED_MODES})")
    if mode not in PARTITIONED_MODES:
        raise ValueError(f"mode must be one of {PARTITIONED_MODES}, got "
                         f"{mode!r}")
    if order0 not in ('self', 'all'):
        raise ValueError(f"order0 must be 'self' or 'all', got {order0!r}")


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
            mode: str, order0: str, group, plan: Optional[_PowerPlan]
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
    grad = ok and torch.is_grad_enabled() and edge_attr.requires_grad
    row = [code, int(num_local),
           edge_attr.size(1) if ok else 0,
           _DTYPES.index(edge_attr.dtype) if ok else -1,
           _crc((P, mode, order0)), int(grad)] + edges
    table = _gather_rows(row, group, _device_of(edge_attr))
    stats: CommStats = {}
    record(stats, 'checks', 8 * len(row) * (world - 1))
    for r, c in enumerate(table[:, 0].tolist()):
        if c == _NUM_LOCAL:
            raise ValueError(f"{what}: on rank {r}, {_MESSAGES[c]}")
        if c != _OK:
            raise ValueError(f"{what}: edge_attr on rank {r} {_MESSAGES[c]}")
    sizes = table[:, 1].tolist()
    check_edges(table[:, 6:], sizes, what)
    for c, name in ((2, 'number of views M (score columns)'),
                    (3, 'dtype of the scores'),
                    (4, 'P, mode and order0'),
                    (5, 'gradient mode: scores that require grad on one '
                        'rank need a backward pass on all')):
        if len(set(table[:, c].tolist())) > 1:
            raise ValueError(f"{what}: every rank must pass the same {name}")
    _check_options(P, mode, order0)
    if mode == 'elementwise':
        return _elementwise(edge_index, edge_attr, P, order0), stats, None
    if plan is None and P >= 1:
        plan = _PowerPlan(edge_index, sizes, rank, group, stats)
    return _masked(plan, edge_index, edge_attr, P, stats), stats, plan


def partitioned_graph_powers(edge_index: Tensor, edge_attr: Tensor,
                             num_local: int, P: int, mode: str = 'masked',
                             order0: str = 'self', group=None
                             ) -> Tuple[Tensor, CommStats]:
    r"""The orders :math:`p = 0, \dots, P` of every view's relation graph on
    this rank's edges: the rows of :class:`~pyg_lego.nn.GraphPowerConv`'s
    output that belong to this rank, for the :obj:`"masked"` and
    :obj:`"elementwise"` modes.

    Rank :math:`r` owns nodes :math:`o_r, \dots, o_r + n_r - 1`
    (:obj:`num_local` :math:`= n_r`, in rank order) and every edge of their
    rows. The **masked** power

    .. math::
        \mathbf{A}_m = \mathbf{D}_m^{-1/2} \mathbf{R}_m \mathbf{D}_m^{-1/2},
        \qquad
        \mathbf{R}^{(p)}_{m, ij} = \sum_{(i, l), (l, j), (i, j) \in
        \mathcal{E}} \mathbf{R}^{(p-1)}_{m, il} \, \mathbf{A}_{m, lj}

    needs, for a row :math:`i`, its own row of the previous order and the
    rows :math:`l` of :math:`\mathbf{A}_m` of its neighbours. The rank
    computes its rows' degrees (it holds all their edges), fetches its halo
    nodes' :math:`\mathbf{D}^{-1/2}` (one exchange) and then their rows of
    :math:`\mathbf{A}_m` (one exchange of the values, after one of the rows'
    structure): :math:`\mathbf{A}` is the same for every order, so this
    single exchange of rows serves every order :math:`p \ge 2`, and the
    orders themselves are computed without further communication. All
    exchanges are :func:`~torch.distributed.all_to_all_single` of only the
    rows needed. The **element-wise** mode is local (no exchange). The
    :obj:`"propagated"` mode raises :class:`NotImplementedError`.

    The result is differentiable with respect to :obj:`edge_attr`: the
    backward pass returns the gradients of the halo's rows to their owners,
    so every rank must run it. Errors are raised on every rank.

    Args:
        edge_index (torch.Tensor): The rank's edges :math:`(2, E_r)` in
            global ids, coalesced, e.g. from
            :func:`~pyg_lego.distributed.partitioned_pattern`.
        edge_attr (torch.Tensor): Their scores :math:`(E_r, M)`, e.g. from
            :func:`~pyg_lego.distributed.partitioned_relation_scores`.
        num_local (int): The rank's nodes :math:`n_r \ge 1`.
        P (int): Highest order :math:`P`.
        mode (str, optional): :obj:`"masked"` or :obj:`"elementwise"`.
            (default: :obj:`"masked"`)
        order0 (str, optional): Element-wise order :math:`0`, see
            :class:`~pyg_lego.nn.GraphPowerConv`. (default: :obj:`"self"`)
        group (torch.distributed.ProcessGroup, optional): The process group;
            the default group if :obj:`None`. (default: :obj:`None`)

    Returns:
        :obj:`(powers, stats)`: the orders :math:`(E_r, M, P + 1)` and the
        bytes this rank sent by stage: :obj:`"checks"`, and for the masked
        mode :obj:`"powers/requests"` (the halo's ids),
        :obj:`"powers/structure"` (its rows' lengths and columns),
        :obj:`"powers/degrees"`, :obj:`"powers/rows"` (the rows of
        :math:`\mathbf{A}`), and their :obj:`".backward"` stages once a
        backward pass has run.
    """
    powers, stats, _ = _powers(edge_index, edge_attr, num_local, P, mode,
                               order0, group, None)
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
        mode (str, optional): :obj:`"masked"` or :obj:`"elementwise"`.
            (default: :obj:`"masked"`)
        fusion (str, optional): :obj:`"linear"` or :obj:`"polynomial"`.
            (default: :obj:`"linear"`)
        out_channels (int, optional): Fused graphs :math:`C`.
            (default: :obj:`1`)
        rank (int, optional): CP rank, see :class:`~pyg_lego.nn.LEGOFusion`.
            (default: :obj:`None`)
        order0 (str, optional): Element-wise order :math:`0`.
            (default: :obj:`"self"`)
        cached (bool, optional): Keep the halo exchanges and the two-step
            paths of the first call (one fixed partitioned graph).
            (default: :obj:`False`)
        group (torch.distributed.ProcessGroup, optional): The process group;
            the default group if :obj:`None`. (default: :obj:`None`)

    Shapes:
        - **input:** the rank's edge indices :math:`(2, E_r)`, their scores
          :math:`(E_r, M)`, the rank's number of nodes :math:`n_r`
        - **output:** fused edge weights :math:`(E_r, C)` and the
          communication stats of :func:`partitioned_graph_powers`
    """

    def __init__(self, view_names: Sequence[str], P: int = 2,
                 mode: str = 'masked', fusion: str = 'linear',
                 out_channels: int = 1, rank: Optional[int] = None,
                 order0: str = 'self', cached: bool = False, group=None):
        super().__init__()
        _check_options(P, mode, order0)
        self.view_names = list(view_names)
        self.P, self.mode, self.order0 = int(P), mode, order0
        self.cached, self.group = cached, group
        self.fusion = LEGOFusion(len(self.view_names), P,
                                 out_channels=out_channels, kind=fusion,
                                 rank=rank, view_names=self.view_names)
        self._plan: Optional[_PowerPlan] = None

    def reset_parameters(self):
        self.fusion.reset_parameters()
        self._plan = None

    def forward(self, edge_index: Tensor, edge_attr: Tensor, num_local: int
                ) -> Tuple[Tensor, CommStats]:
        powers, stats, plan = _powers(edge_index, edge_attr, num_local,
                                      self.P, self.mode, self.order0,
                                      self.group, self._plan)
        if self.cached:
            self._plan = plan
        return self.fusion(powers), stats

    def reduce_gradients(self) -> int:
        r"""Sums every parameter's gradient over the ranks (one
        :func:`~torch.distributed.all_reduce` of them all; a parameter
        without a gradient counts as zero). Returns the bytes reduced."""
        params = list(self.parameters())
        flat = torch.cat([(p.grad if p.grad is not None
                           else torch.zeros_like(p)).reshape(-1)
                          for p in params])
        dist.all_reduce(flat, group=self.group)
        start = 0
        for p in params:
            p.grad = flat[start:start + p.numel()].view_as(p)
            start += p.numel()
        return flat.numel() * flat.element_size()

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(views={self.view_names}, '
                f'P={self.P}, mode={self.mode!r}, '
                f'fusion={self.fusion.kind!r}, '
                f'out_channels={self.fusion.out_channels})')
