r"""Node classification trained over a row-partitioned fused graph, on
:mod:`torch.distributed`: every rank holds its rows' edges and node
features, fuses its edges with a :class:`~pyg_lego.distributed.
PartitionedLEGO` and propagates over them with a :class:`PartitionedGCN`,
whose layers fetch their halo's hidden features by one differentiable halo
exchange each; fusion and head are trained jointly, end to end.

Each step is full-graph training: every rank's logits, loss terms and
gradients are the single process's on its rows, so the summed gradients
(one :func:`~torch.distributed.all_reduce` after the backward pass) are the
single process's gradient of the loss over all labelled nodes.

PyG's :mod:`torch_geometric.distributed` does not fit here: its
:class:`~torch_geometric.distributed.DistNeighborLoader` samples
neighbourhoods through :obj:`torch.ops.pyg.dist_neighbor_sample` of
:obj:`pyg-lib`, which is not installed here (:obj:`import pyg_lib` fails and
the op is absent), PyG 2.8 warns that the package is deprecated since
2.7.0, and sampled mini-batches are not the full-graph step that this
module reproduces exactly.
"""
import numbers
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GCNConv

from pyg_lego.distributed.expansion import PartitionedLEGO
from pyg_lego.distributed.halo import (_EDGES_OK, CommStats, Exchange,
                                       LocalGraph, check_edges, edge_summary,
                                       node_halo, record, sum_gradients)
from pyg_lego.distributed.knn import (_DTYPES, _device_of, _gather_rows,
                                      _global_rank, _group_info)
from pyg_lego.distributed.relation import _crc

_OK, _X_SHAPE, _X_FLOAT, _X_DTYPE, _X_FINITE, _FUSED_SHAPE, \
    _FUSED_DTYPE, _FUSED_FINITE, _Y, _MASK = range(10)
_MESSAGES = {
    _X_SHAPE: "x must be a torch.Tensor of shape [n_r, F_in] with n_r >= 1 "
              "rows (the rank's nodes) and F_in = the head's in_channels",
    _X_FLOAT: "x must be floating point",
    _X_DTYPE: "x must have the dtype of the head's parameters",
    _X_FINITE: "x contains NaN or Inf",
    _FUSED_SHAPE: "fused must be a torch.Tensor of shape [E_r, C], one row "
                  "per edge of edge_index and C = the head's channels",
    _FUSED_DTYPE: "fused must have the dtype of x",
    _FUSED_FINITE: "fused contains NaN or Inf",
    _Y: "y must be a torch.long tensor of shape [n_r] with classes in "
        "0..out_channels - 1 at the labelled nodes",
    _MASK: "train_mask must be a torch.bool tensor of shape [n_r]",
}


def _merge(into: CommStats, stats: CommStats) -> CommStats:
    for stage, nbytes in stats.items():
        record(into, stage, nbytes)
    return into


class _HeadPlan:
    r"""What rank :math:`r` needs to propagate over its rows: its local
    graph, the exchange of its halo nodes' rows and its edges over its
    local nodes in the order of
    :func:`~torch_geometric.utils.add_remaining_self_loops` (the edges that
    are no self-loops, then one self-loop per own node)."""

    def __init__(self, edge_index: Tensor, sizes: List[int], rank: int,
                 group, stats: CommStats):
        self.graph = g = LocalGraph(edge_index, sizes, rank)
        self.nodes: Exchange = node_halo(g.halo, sizes, rank, group, stats,
                                         'gcn/requests')
        loop = g.row == g.col
        self.keep = (~loop).nonzero().squeeze(1)
        self.loop_edges = loop.nonzero().squeeze(1)
        self.loop_nodes = g.row[self.loop_edges] - g.start
        own = torch.arange(g.start, g.start + g.size, device=g.row.device)
        self.index = torch.stack([torch.cat([g.row[self.keep], own]),
                                  torch.cat([g.col[self.keep], own])])


class PartitionedGCN(torch.nn.Module):
    r"""A :class:`~pyg_lego.nn.PropagationHead` of
    :class:`~torch_geometric.nn.GCNConv` layers on a row-partitioned fused
    graph: rank :math:`r` holds the features of its nodes
    :math:`o_r, \dots, o_r + n_r - 1` and the fused weights
    :math:`\mathbf{G}_{\mathcal{E}_r}` of its rows' edges, and computes its
    rows of

    .. math::
        \mathbf{H}^{(l+1)} = \sigma\Big( \sum_{c=1}^{C}
        \hat{\mathbf{A}}_c \mathbf{H}^{(l)} \mathbf{\Theta}^{(l)}_c +
        \mathbf{b}^{(l)}_c \Big), \qquad
        \hat{\mathbf{A}}_c = \tilde{\mathbf{D}}_c^{-1/2}
        \tilde{\mathbf{G}}_c \tilde{\mathbf{D}}_c^{-1/2},

    where :math:`\tilde{\mathbf{G}}_c` is channel :math:`c` of the fused
    graph with a self-loop of weight :math:`1` at every node that has none
    and :math:`\tilde{\mathbf{D}}_{c, ii} = \sum_j
    \tilde{\mathbf{G}}_{c, ij}` (the sums of the rank's rows), as
    :class:`~torch_geometric.nn.GCNConv` with
    :obj:`flow="target_to_source"` normalises: node :math:`i` aggregates
    over the edges :math:`(i, j)` of its own row. The halo nodes'
    :math:`\tilde{\mathbf{D}}^{-1/2}` come in one exchange per call and their
    hidden features :math:`\mathbf{H}^{(l)}` in one exchange per layer
    (:func:`~torch.distributed.all_to_all_single` of only the rows needed,
    all channels together); the backward pass returns their gradients to
    the owners the same way, so every rank must run it. Dropout is applied
    by the owner before the exchange, so every rank sees a node's hidden
    features under the same mask.

    With the same parameters (a state dict of
    :obj:`PropagationHead(..., conv=GCNConv, flow="target_to_source")`
    loads, and the other way round) the output is that head's on the rank's
    rows; for a symmetric fused graph that is also the default
    :obj:`flow="source_to_target"`. The parameters must be the same on
    every rank (see :meth:`PartitionedNodeClassifier.broadcast_parameters`).
    Errors are raised on every rank.

    Args:
        in_channels (int): Input feature width :math:`F_{in}`.
        hidden_channels (int): Hidden width.
        out_channels (int): Output width :math:`F_{out}` (the classes).
        num_layers (int, optional): Layers :math:`L`. (default: :obj:`2`)
        channels (int, optional): Fused channels :math:`C`.
            (default: :obj:`1`)
        dropout (float, optional): Dropout between layers.
            (default: :obj:`0.0`)
        cached (bool, optional): Keep the halo exchange of the first call
            (one fixed partitioned graph). (default: :obj:`False`)
        group (torch.distributed.ProcessGroup, optional): The process group;
            the default group if :obj:`None`. (default: :obj:`None`)

    Shapes:
        - **input:** the rank's node features :math:`(n_r, F_{in})`, its
          edge indices :math:`(2, E_r)` in global ids (coalesced, e.g. from
          :func:`~pyg_lego.distributed.partitioned_pattern`), their fused
          weights :math:`(E_r, C)`
        - **output:** the rank's outputs :math:`(n_r, F_{out})` and the
          bytes sent by stage: :obj:`"checks"`, :obj:`"gcn/requests"`,
          :obj:`"gcn/degrees"`, :obj:`"gcn/features"` and their
          :obj:`".backward"` stages once a backward pass has run
    """

    def __init__(self, in_channels: int, hidden_channels: int,
                 out_channels: int, num_layers: int = 2, channels: int = 1,
                 dropout: float = 0.0, cached: bool = False, group=None):
        super().__init__()
        for name, value in (('in_channels', in_channels),
                            ('hidden_channels', hidden_channels),
                            ('out_channels', out_channels),
                            ('num_layers', num_layers),
                            ('channels', channels)):
            if isinstance(value, bool) or \
                    not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got "
                                 f"{value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.out_channels, self.num_layers = out_channels, num_layers
        self.channels, self.dropout = channels, dropout
        self.cached, self.group = cached, group
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + \
            [out_channels]
        # Normalised here, on the rank's rows and its halo's degrees:
        # GCNConv's own gcn_norm would need the halo's whole rows.
        self.convs = torch.nn.ModuleList([
            torch.nn.ModuleList([
                GCNConv(widths[i], widths[i + 1], normalize=False,
                        add_self_loops=False, flow='target_to_source')
                for _ in range(channels)
            ]) for i in range(num_layers)
        ])
        self._plan: Optional[_HeadPlan] = None

    def reset_parameters(self):
        for layer in self.convs:
            for conv in layer:
                conv.reset_parameters()
        self._plan = None

    def _dtype(self) -> torch.dtype:
        return self.convs[0][0].lin.weight.dtype

    def check(self, x: Tensor, edge_index: Tensor, fused: Optional[Tensor],
              stats: CommStats, what: str = 'PartitionedGCN') -> List[int]:
        r"""Checks the inputs of every rank alike (one
        :func:`~torch.distributed.all_gather`; :obj:`fused=None` leaves out
        the fused weights) and returns every rank's number of nodes."""
        rank, world = _group_info(self.group)
        edges = edge_summary(edge_index)
        code, num_local = _OK, 0
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(0) < 1 or \
                x.size(1) != self.in_channels:
            code = _X_SHAPE
        elif x.dtype not in _DTYPES:
            code = _X_FLOAT
        elif x.dtype != self._dtype():
            code = _X_DTYPE
        elif not bool(torch.isfinite(x).all()):
            code = _X_FINITE
        else:
            num_local = x.size(0)
        if code == _OK and fused is not None and edges[0] == _EDGES_OK:
            if not isinstance(fused, Tensor) or fused.dim() != 2 or \
                    fused.size(0) != edges[1] or \
                    fused.size(1) != self.channels:
                code = _FUSED_SHAPE
            elif fused.dtype != x.dtype:
                code = _FUSED_DTYPE
            elif not bool(torch.isfinite(fused).all()):
                code = _FUSED_FINITE
        grad = code == _OK and torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
            or (fused is not None and fused.requires_grad))
        row = [code, num_local, _DTYPES.index(self._dtype()),
               _crc((self.in_channels, self.hidden_channels,
                     self.out_channels, self.num_layers, self.channels)),
               int(grad)] + edges
        table = _gather_rows(row, self.group, _device_of(x))
        record(stats, 'checks', 8 * len(row) * (world - 1))
        for r, c in enumerate(table[:, 0].tolist()):
            if c != _OK:
                raise ValueError(f"{what}: on rank {r}, {_MESSAGES[c]}")
        sizes = table[:, 1].tolist()
        check_edges(table[:, 5:], sizes, what)
        for c, name in ((2, 'dtype of the parameters'),
                        (3, 'in_channels, hidden_channels, out_channels, '
                            'num_layers and channels'),
                        (4, 'gradient mode: inputs or parameters that '
                            'require grad on one rank need a backward pass '
                            'on all')):
            if len(set(table[:, c].tolist())) > 1:
                raise ValueError(f"{what}: every rank must have the same "
                                 f"{name}")
        return sizes

    def propagate(self, x: Tensor, edge_index: Tensor, fused: Tensor,
                  sizes: List[int], stats: CommStats) -> Tensor:
        r"""The forward pass on inputs that :meth:`check` accepted."""
        rank, _ = _group_info(self.group)
        plan = self._plan
        if plan is None:
            plan = _HeadPlan(edge_index, sizes, rank, self.group, stats)
            if self.cached:
                self._plan = plan
        g = plan.graph
        # The self-loops of add_remaining_self_loops: the graph's own loop
        # weight where it has one, 1 elsewhere.
        loops = fused.new_ones(g.size, fused.size(1)).index_copy(
            0, plan.loop_nodes, fused[plan.loop_edges])
        weight = torch.cat([fused[plan.keep], loops])
        deg = weight.new_zeros(g.size, weight.size(1)).index_add(
            0, plan.index[0] - g.start, weight)
        dinv = deg.pow(-0.5)
        dinv = dinv.masked_fill(dinv == float('inf'), 0.0)
        dinv = g.nodes(dinv, plan.nodes(dinv, stats, 'gcn/degrees'))
        norm = dinv[plan.index[0]] * weight * dinv[plan.index[1]]
        h = x
        for i, layer in enumerate(self.convs):
            local = g.nodes(h, plan.nodes(h, stats, 'gcn/features'))
            out = sum(conv(local, plan.index, norm[:, c])
                      for c, conv in enumerate(layer))
            h = out[g.start:g.start + g.size]
            if i < self.num_layers - 1:
                h = F.dropout(torch.relu(h), self.dropout, self.training)
        return h

    def forward(self, x: Tensor, edge_index: Tensor, fused: Tensor
                ) -> Tuple[Tensor, CommStats]:
        stats: CommStats = {}
        sizes = self.check(x, edge_index, fused, stats)
        return self.propagate(x, edge_index, fused, sizes, stats), stats

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, hidden_channels='
                f'{self.hidden_channels}, num_layers={self.num_layers}, '
                f'channels={self.channels})')


class PartitionedNodeClassifier(torch.nn.Module):
    r"""A :class:`~pyg_lego.distributed.PartitionedLEGO` fusion and a
    :class:`PartitionedGCN` head over the fused weights, trained jointly:
    on rank :math:`r`,

    .. math::
        \mathbf{Y}_{\mathcal{V}_r} = \mathrm{GCN}_{\Phi}\big(
        \mathbf{X}, \mathcal{E}, f_{\Theta}(\{\mathbf{R}^{(p)}_m\})
        \big)_{\mathcal{V}_r},

    the single process's logits of the rank's nodes :math:`\mathcal{V}_r`
    for :class:`~pyg_lego.LEGO` (:obj:`topk=None`) followed by
    :obj:`PropagationHead(..., conv=GCNConv, flow="target_to_source")`,
    with the same parameters. Data parallelism sums the ranks' gradients
    with one :func:`~torch.distributed.all_reduce` after the backward pass
    (:meth:`reduce_gradients`), not with
    :class:`~torch.nn.parallel.DistributedDataParallel`, whose reducer
    averages the gradients and starts its all-reduces during the backward
    pass, between the halo exchanges' own collectives; so the parameters
    must start equal on every rank (:meth:`broadcast_parameters`).

    Args:
        lego (PartitionedLEGO): The fusion, with :math:`C` out channels.
        head (PartitionedGCN): The head, with :math:`C` channels, on the
            same process group.

    Shapes:
        - **input:** the rank's edge indices :math:`(2, E_r)`, their scores
          :math:`(E_r, M)`, its node features :math:`(n_r, F_{in})`, its
          rows of the view features :math:`[(n_r, d_m)]_m`
          *(propagated mode)*
        - **output:** the rank's logits :math:`(n_r, F_{out})` and the
          bytes sent by stage of the fusion and the head
    """

    def __init__(self, lego: PartitionedLEGO, head: PartitionedGCN):
        super().__init__()
        if lego.group is not head.group:
            raise ValueError("lego and head must run on the same process "
                             "group")
        if lego.fusion.out_channels != head.channels:
            raise ValueError(f"lego fuses {lego.fusion.out_channels} "
                             f"channels but the head expects "
                             f"{head.channels}")
        self.lego, self.head = lego, head
        self.group = head.group

    def reset_parameters(self):
        self.lego.reset_parameters()
        self.head.reset_parameters()

    def forward(self, edge_index: Tensor, edge_attr: Tensor, x: Tensor,
                xs: Optional[List[Tensor]] = None
                ) -> Tuple[Tensor, CommStats]:
        checks: CommStats = {}
        # The nodes are checked first: the fusion takes their number.
        sizes = self.head.check(x, edge_index, None, checks,
                                'PartitionedNodeClassifier')
        fused, stats = self.lego(edge_index, edge_attr, x.size(0), xs)
        # The fusion's dict, which its backward pass writes to as well.
        _merge(stats, checks)
        return self.head.propagate(x, edge_index, fused, sizes, stats), stats

    def broadcast_parameters(self, src: int = 0) -> None:
        r"""Copies rank :obj:`src`'s parameters and buffers (ranks of the
        group) to every rank, as DDP does when it wraps a model."""
        _group_info(self.group)
        src = _global_rank(self.group, src)
        for tensor in list(self.parameters()) + list(self.buffers()):
            with torch.no_grad():
                dist.broadcast(tensor, src, group=self.group)

    def reduce_gradients(self) -> int:
        r"""Sums every parameter's gradient over the ranks (one
        :func:`~torch.distributed.all_reduce` of them all; a parameter
        without a gradient counts as zero). Returns the bytes reduced."""
        return sum_gradients(self.parameters(), self.group)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.lego}, {self.head})'


def _label_code(x, y, train_mask, num_classes: int) -> Tuple[int, int]:
    r"""What is wrong with a rank's labels, and its labelled nodes."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        return _OK, 0  # the model reports x
    n = x.size(0)
    if train_mask is not None and (
            not isinstance(train_mask, Tensor) or
            train_mask.dtype != torch.bool or
            tuple(train_mask.shape) != (n,)):
        return _MASK, 0
    if not isinstance(y, Tensor) or y.dtype != torch.long or \
            tuple(y.shape) != (n,):
        return _Y, 0
    labelled = y if train_mask is None else y[train_mask]
    if labelled.numel() > 0 and (int(labelled.min()) < 0 or
                                 int(labelled.max()) >= num_classes):
        return _Y, 0
    return _OK, labelled.numel()


def partitioned_train_step(model: PartitionedNodeClassifier,
                           optimizer: torch.optim.Optimizer,
                           edge_index: Tensor, edge_attr: Tensor, x: Tensor,
                           y: Tensor, train_mask: Optional[Tensor] = None,
                           xs: Optional[List[Tensor]] = None
                           ) -> Tuple[float, CommStats]:
    r"""One step of full-graph training of :obj:`model` on every rank: the
    cross entropy over the labelled nodes :math:`\mathcal{L}` of all ranks,

    .. math::
        \ell = \frac{1}{|\mathcal{L}|} \sum_r \sum_{i \in \mathcal{L} \cap
        \mathcal{V}_r} \mathrm{CE}(\mathbf{Y}_i, y_i),

    each rank taking the gradient of its own sum divided by the global
    count :math:`|\mathcal{L}|`, so that the summed gradients
    (:meth:`~PartitionedNodeClassifier.reduce_gradients`) are the single
    process's gradient of :math:`\ell`; then :obj:`optimizer` steps on
    every rank alike. Errors are raised on every rank.

    Args:
        model (PartitionedNodeClassifier): The model, with the same
            parameters on every rank.
        optimizer (torch.optim.Optimizer): An optimizer of
            :obj:`model.parameters()`, the same on every rank.
        edge_index (torch.Tensor): The rank's edges :math:`(2, E_r)`.
        edge_attr (torch.Tensor): Their scores :math:`(E_r, M)`.
        x (torch.Tensor): The rank's node features :math:`(n_r, F_{in})`.
        y (torch.Tensor): Their classes :math:`(n_r)` (read at the labelled
            nodes only).
        train_mask (torch.Tensor, optional): The rank's labelled nodes
            :math:`(n_r)`; all of them if :obj:`None`.
            (default: :obj:`None`)
        xs (list of torch.Tensor, optional): The rank's rows of the view
            features (propagated mode). (default: :obj:`None`)

    Returns:
        :obj:`(loss, stats)`: :math:`\ell` and the bytes this rank sent by
        stage: the model's and the labels' :obj:`"checks"`, with the bytes
        all-reduced of the gradients (:obj:`"train/gradients"`) and of the
        loss (:obj:`"train/loss"`).
    """
    what = 'partitioned_train_step'
    rank, world = _group_info(model.group)
    code, count = _label_code(x, y, train_mask, model.head.out_channels)
    table = _gather_rows([code, count], model.group, _device_of(x))
    for r, c in enumerate(table[:, 0].tolist()):
        if c != _OK:
            raise ValueError(f"{what}: on rank {r}, {_MESSAGES[c]}")
    total = int(table[:, 1].sum())
    if total == 0:
        raise ValueError(f"{what}: no rank has a labelled node")
    model.train()
    optimizer.zero_grad()
    # The model's dict, which the backward pass writes to as well.
    logits, stats = model(edge_index, edge_attr, x, xs)
    record(stats, 'checks', 16 * (world - 1))
    if train_mask is not None:
        logits, y = logits[train_mask], y[train_mask]
    loss = F.cross_entropy(logits, y, reduction='sum') / total
    loss.backward()
    record(stats, 'train/gradients', model.reduce_gradients())
    optimizer.step()
    loss = loss.detach().clone()
    dist.all_reduce(loss, group=model.group)
    record(stats, 'train/loss', loss.element_size())
    return float(loss), stats
