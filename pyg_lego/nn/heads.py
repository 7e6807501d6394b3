from typing import Optional, Tuple, Type

import torch
from torch import Tensor
from torch_geometric.nn import GCNConv, MessagePassing
from torch_geometric.utils import scatter, to_dense_adj

from pyg_lego.data.validation import check_edge_index


def _check_fused(fused: Tensor, edge_index: Tensor,
                 channels: Optional[int] = None) -> None:
    if fused.dim() != 2 or fused.size(0) != edge_index.size(1):
        raise ValueError(f"fused must have shape [|E|, C] with |E| = "
                         f"{edge_index.size(1)}, got {list(fused.shape)}")
    if channels is not None and fused.size(1) != channels:
        raise ValueError(f"fused has {fused.size(1)} channels but the head "
                         f"expects {channels}")


#: Row readouts of :func:`graph_space_rows`.
READOUTS = ('rows', 'deviation')


def graph_space_rows(fused: Tensor, edge_index: Tensor, batch: Tensor,
                     num_nodes: int, readout: str = 'rows') -> Tensor:
    r"""Every node's row of its graph's dense fused graph, as the
    graph-space heads read it (graphs of a mini-batch densified one by one,
    each zero-padded to :obj:`num_nodes`).

    :obj:`"rows"` is the paper's readout: row :math:`i` in node order,
    :math:`[\mathbf{G}_{i, :, 1} \Vert \cdots \Vert \mathbf{G}_{i, :, C}]`.
    :obj:`"deviation"` is each node's absolute deviation from how its graph's
    nodes relate to every other node, off the diagonal, sorted in
    descending order per channel:

    .. math::
        r_{ij} = \Big| \mathbf{G}_{ij} - \frac{1}{n - 1} \sum_{k \ne j}
        \mathbf{G}_{kj} \Big|, \quad j \ne i, \qquad
        \mathbf{h}_i = \mathrm{sort}_{\downarrow}(r_{i, :}),

    with :math:`n` nodes in the graph and zeros after its :math:`n - 1`
    values. It does not depend on the order of the nodes, it is :math:`0`
    for a node related to the others as they are among themselves, and it
    leaves out the self-relation, which is constant for every node in the
    element-wise mode and dominates the normalised masked powers.

    Args:
        fused (torch.Tensor): Fused weights :math:`(|\mathcal{E}|, C)`.
        edge_index (torch.Tensor): Edge indices :math:`(2, |\mathcal{E}|)`.
        batch (torch.Tensor): Graph of every node :math:`(|\mathcal{V}|)`.
        num_nodes (int): Largest graph size :math:`N`.
        readout (str, optional): :obj:`"rows"` or :obj:`"deviation"`.
            (default: :obj:`"rows"`)

    Returns:
        :math:`(|\mathcal{V}|, N C)`: the :math:`C` channels of position
        :math:`j` side by side (node :math:`j` for :obj:`"rows"`, the
        :math:`j`-th largest deviation for :obj:`"deviation"`).
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got "
                         f"{readout!r}")
    sizes = torch.bincount(batch)
    if int(sizes.max()) > num_nodes:
        raise ValueError(f"a graph has {int(sizes.max())} nodes but the "
                         f"head was built for at most {num_nodes}")
    dense = to_dense_adj(edge_index, batch, fused, max_num_nodes=num_nodes)
    valid = torch.arange(num_nodes, device=batch.device) < \
        sizes.unsqueeze(-1)
    if readout == 'rows':
        return dense.reshape(dense.size(0), num_nodes, -1)[valid]
    # [B, N, N, C]: every graph's off-diagonal column means over its n
    # nodes (padded rows and columns are zero and stay zero).
    off = ~torch.eye(num_nodes, dtype=torch.bool, device=dense.device)
    off = (off & valid.unsqueeze(-1) & valid.unsqueeze(1)).unsqueeze(-1)
    dense = dense * off
    count = (sizes - 1).clamp_min(1).to(dense.dtype).view(-1, 1, 1, 1)
    mean = dense.sum(dim=1, keepdim=True) / count
    deviation = (dense - mean).abs() * off
    rows = deviation.sort(dim=2, descending=True).values
    return rows.reshape(rows.size(0), num_nodes, -1)[valid]


class GraphSpaceHead(torch.nn.Module):
    r"""The graph-space head of LEGO for small graphs (the documentation's
    method page, docs/method.rst, section 4):
    each node is represented by its row of the dense fused graph and scored
    by a small MLP,

    .. math::
        s_i = \mathbf{w}_2^\top \, \mathrm{ReLU}\big(\mathbf{W}_1
        \mathbf{h}_i + \mathbf{b}_1\big) + b_2, \qquad
        \mathbf{h}_i = [\mathbf{G}_{i, :, 1} \Vert \cdots \Vert
        \mathbf{G}_{i, :, C}]

    with the paper's readout :obj:`"rows"`; :obj:`"deviation"` reads each
    node's sorted deviations from its graph's typical relations instead
    (:func:`graph_space_rows`), which no longer depends on where a node sits
    in its graph.

    Graphs of a mini-batch are densified one by one (at most
    :obj:`num_nodes` nodes each, smaller ones zero-padded), so this head is
    for the paper's setting of small graphs (e.g. :math:`T = 32` snippets).

    By default the rows pass a :class:`~torch.nn.BatchNorm1d` first: fused
    weights tend to sit in a narrow band that the plain linear layers barely
    learn from.

    Args:
        num_nodes (int): Largest graph size :math:`N`.
        channels (int, optional): Fused channels :math:`C`. (default: :obj:`1`)
        hidden_channels (int, optional): Hidden width; :math:`N` if
            :obj:`None`.
        dropout (float, optional): Dropout on the hidden layer.
            (default: :obj:`0.0`)
        norm (bool, optional): Batch-normalise the rows before the first
            layer. (default: :obj:`True`)
        readout (str, optional): :obj:`"rows"` (the paper's) or
            :obj:`"deviation"`, see :func:`graph_space_rows`.
            (default: :obj:`"rows"`)

    Shapes:
        - **input:** fused weights :math:`(|\mathcal{E}|, C)`, edge indices
          :math:`(2, |\mathcal{E}|)`, batch vector :math:`(|\mathcal{V}|)`
          *(optional)*
        - **output:** node scores :math:`(|\mathcal{V}|)`
    """

    def __init__(self, num_nodes: int, channels: int = 1,
                 hidden_channels: Optional[int] = None, dropout: float = 0.0,
                 norm: bool = True, readout: str = 'rows'):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got "
                             f"{readout!r}")
        self.num_nodes = num_nodes
        self.channels = channels
        self.hidden_channels = hidden_channels or num_nodes
        self.dropout = dropout
        self.readout = readout
        self.norm = torch.nn.BatchNorm1d(num_nodes * channels) if norm \
            else None
        self.lin1 = torch.nn.Linear(num_nodes * channels, self.hidden_channels)
        self.lin2 = torch.nn.Linear(self.hidden_channels, 1)

    def reset_parameters(self):
        if self.norm is not None:
            self.norm.reset_parameters()
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, fused: Tensor, edge_index: Tensor,
                batch: Optional[Tensor] = None) -> Tensor:
        if fused.dim() == 1:
            fused = fused.unsqueeze(-1)
        check_edge_index(edge_index)
        _check_fused(fused, edge_index, self.channels)
        if batch is None:
            batch = edge_index.new_zeros(int(edge_index.max()) + 1)
        check_edge_index(edge_index, batch.numel())
        rows = graph_space_rows(fused, edge_index, batch, self.num_nodes,
                                self.readout)
        if self.norm is not None:
            if self.training and rows.size(0) < 2:
                raise ValueError("batch norm needs at least 2 nodes in "
                                 "training mode; pass norm=False or call "
                                 ".eval()")
            rows = self.norm(rows)
        h = torch.relu(self.lin1(rows))
        h = torch.nn.functional.dropout(h, self.dropout, self.training)
        return self.lin2(h).squeeze(-1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_nodes={self.num_nodes}, '
                f'channels={self.channels}, '
                f'hidden_channels={self.hidden_channels}, '
                f'norm={self.norm is not None}, readout={self.readout!r})')


class PropagationHead(torch.nn.Module):
    r"""The propagation head of LEGO for graphs of any size: a stack of PyG
    layers over node features whose :obj:`edge_weight` is the fused graph.
    With :math:`C` fused channels, each layer runs one convolution per
    channel and sums them:

    .. math::
        \mathbf{H}^{(l+1)} = \sigma\Big( \sum_{c=1}^{C}
        \mathrm{Conv}^{(l)}_c\big(\mathbf{H}^{(l)}, \mathcal{E},
        \mathbf{G}_{:, c}\big) \Big)

    Args:
        in_channels (int): Input feature width.
        hidden_channels (int): Hidden width.
        out_channels (int): Output width.
        num_layers (int, optional): Layers. (default: :obj:`2`)
        channels (int, optional): Fused channels :math:`C`. (default: :obj:`1`)
        conv (type, optional): A PyG layer class taking
            :obj:`(x, edge_index, edge_weight)`.
            (default: :class:`~torch_geometric.nn.GCNConv`)
        dropout (float, optional): Dropout between layers.
            (default: :obj:`0.0`)
        **conv_kwargs (optional): Extra arguments of :obj:`conv`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge
          indices :math:`(2, |\mathcal{E}|)`, fused weights
          :math:`(|\mathcal{E}|, C)`
        - **output:** :math:`(|\mathcal{V}|, F_{out})`
    """

    def __init__(self, in_channels: int, hidden_channels: int,
                 out_channels: int, num_layers: int = 2, channels: int = 1,
                 conv: Type[MessagePassing] = GCNConv, dropout: float = 0.0,
                 **conv_kwargs):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_layers, self.channels, self.dropout = num_layers, channels, \
            dropout
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + \
            [out_channels]
        self.convs = torch.nn.ModuleList([
            torch.nn.ModuleList([
                conv(widths[i], widths[i + 1], **conv_kwargs)
                for _ in range(channels)
            ]) for i in range(num_layers)
        ])

    def reset_parameters(self):
        for layer in self.convs:
            for conv in layer:
                conv.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, fused: Tensor) -> Tensor:
        if fused.dim() == 1:
            fused = fused.unsqueeze(-1)
        if fused.size(1) != self.channels:
            raise ValueError(f"fused has {fused.size(1)} channels but the "
                             f"head expects {self.channels}")
        if x.dim() != 2 or x.size(1) != self.in_channels:
            raise ValueError(f"x must have shape [N, {self.in_channels}], got "
                             f"{list(x.shape)}")
        check_edge_index(edge_index, x.size(0))
        for i, layer in enumerate(self.convs):
            x = sum(conv(x, edge_index, fused[:, c])
                    for c, conv in enumerate(layer))
            if i < self.num_layers - 1:
                x = torch.relu(x)
                x = torch.nn.functional.dropout(x, self.dropout, self.training)
        return x

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, num_layers={self.num_layers}, '
                f'channels={self.channels}, '
                f'conv={type(self.convs[0][0]).__name__})')


def node_statistics(fused: Tensor, edge_index: Tensor, num_nodes: int,
                    batch: Optional[Tensor] = None
                    ) -> Tuple[Tensor, Tensor]:
    r"""Weighted degree :math:`d_i = \sum_j \mathbf{G}_{ij}` of every node and
    its (population) variance within each graph.

    Returns:
        :obj:`(degree, variance)` of shapes :math:`(N, C)` and
        :math:`(B, C)`.
    """
    if fused.dim() == 1:
        fused = fused.unsqueeze(-1)
    check_edge_index(edge_index, num_nodes)
    _check_fused(fused, edge_index)
    degree = scatter(fused, edge_index[0], 0, dim_size=num_nodes,
                     reduce='sum')
    if batch is None:
        batch = edge_index.new_zeros(num_nodes)
    mean = scatter(degree, batch, 0, reduce='mean')
    variance = scatter((degree - mean[batch])**2, batch, 0, reduce='mean')
    return degree, variance

