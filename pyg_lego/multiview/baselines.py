r"""The graphs and models that LEGO is compared with: kNN graphs of one view
or of all views concatenated, given graphs, the mean of several graphs'
normalised adjacencies, label propagation, an MLP and the usual PyG GNNs."""
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.nn import (APPNP, GATConv, GCNConv, LabelPropagation,
                                MixHopConv, SGConv, TAGConv)
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from pyg_lego.data import GivenGraph, knn_pattern
from pyg_lego.data.relation import coalesce_pattern

#: The model families of :class:`GNN` (``'mlp'`` ignores the graph).
KINDS = ('mlp', 'gcn', 'gat', 'sgc', 'appnp', 'tag', 'mixhop')


class Graph(NamedTuple):
    r"""A graph on the :math:`N` nodes: :obj:`edge_index`
    :math:`(2, |\mathcal{E}|)` with self-loops and optional
    :obj:`edge_weight` :math:`(|\mathcal{E}|,)` (:obj:`None`: unweighted)."""
    edge_index: Tensor
    edge_weight: Optional[Tensor] = None


def knn_graph(x: Tensor, k: int) -> Graph:
    r"""The symmetric, unweighted cosine kNN graph of features :obj:`x`
    :math:`(N, d)`, with self-loops (the usual graph-construction baseline)."""
    return Graph(knn_pattern({'x': x}, k))


def given_graph(graph: GivenGraph, num_nodes: int) -> Graph:
    r"""A :class:`~pyg_lego.GivenGraph` made symmetric, with self-loops; its
    weights are dropped (the baselines see the plain graph)."""
    ei = graph.edge_index
    loop = torch.arange(num_nodes, device=ei.device)
    ei = torch.cat([ei, ei.flip(0), torch.stack([loop, loop])], dim=1)
    return Graph(coalesce_pattern(ei, num_nodes))


def union_graph(graphs: Sequence[Graph], num_nodes: int) -> Graph:
    r"""All edges of several graphs, unweighted."""
    ei = torch.cat([g.edge_index for g in graphs], dim=1)
    return Graph(coalesce_pattern(ei, num_nodes))


def mean_normalized_adjacency(graphs: Sequence[Graph],
                              num_nodes: int) -> Graph:
    r"""The simple multi-graph baseline: the average of the views'
    normalised adjacencies,

    .. math::
        \bar{\mathbf{A}} = \frac{1}{M} \sum_{m=1}^{M}
        \mathbf{D}_m^{-1/2} \mathbf{A}_m \mathbf{D}_m^{-1/2}.
    """
    if len(graphs) == 0:
        raise ValueError("mean_normalized_adjacency needs at least one graph")
    keys, weights = [], []
    for g in graphs:
        ei, w = gcn_norm(g.edge_index, g.edge_weight, num_nodes,
                         add_self_loops=False)
        keys.append(ei[0] * num_nodes + ei[1])
        weights.append(w / len(graphs))
    uniq, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    weight = torch.zeros(uniq.numel()).index_add(0, inverse,
                                                  torch.cat(weights))
    return Graph(torch.stack([uniq // num_nodes, uniq % num_nodes]), weight)


class GNN(torch.nn.Module):
    r"""A two-layer node classifier of one of the usual families, running on
    a (possibly weighted) graph; every conv applies its own normalisation.

    - :obj:`"mlp"`: :math:`\mathrm{Lin} \to \mathrm{ReLU} \to \mathrm{Lin}`
      (no graph);
    - :obj:`"gcn"`, :obj:`"tag"` (:math:`K = 2`): two convolutions;
    - :obj:`"gat"`: 8 heads, then one; a weighted graph enters as a
      1-dimensional edge feature of the attention;
    - :obj:`"sgc"`: :math:`\mathrm{softmax}(\hat{\mathbf{A}}^2 \mathbf{X}
      \mathbf{W})`, no hidden layer;
    - :obj:`"appnp"`: an MLP, then 10 steps of personalised PageRank
      (:math:`\alpha = 0.1`);
    - :obj:`"mixhop"`: one MixHop layer (powers 0, 1, 2), then a linear layer.

    Dropout is applied to the input and to the hidden layer.

    Args:
        kind (str): One of :obj:`KINDS`.
        in_channels (int): Input width.
        hidden_channels (int): Hidden width.
        out_channels (int): Classes.
        dropout (float, optional): Dropout probability. (default: :obj:`0.5`)
        weighted (bool, optional): Whether edge weights will be passed
            (needed by :obj:`"gat"` only). (default: :obj:`False`)

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)`, edge weights :math:`(|\mathcal{E}|)`
          *(optional)*
        - **output:** logits :math:`(N, F_{out})`
    """

    def __init__(self, kind: str, in_channels: int, hidden_channels: int,
                 out_channels: int, dropout: float = 0.5,
                 weighted: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.dropout, self.weighted = kind, dropout, weighted
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_channels = hidden_channels
        h = hidden_channels
        if kind == 'mlp':
            layers = [torch.nn.Linear(in_channels, h),
                      torch.nn.Linear(h, out_channels)]
        elif kind == 'gcn':
            layers = [GCNConv(in_channels, h), GCNConv(h, out_channels)]
        elif kind == 'tag':
            layers = [TAGConv(in_channels, h, K=2),
                      TAGConv(h, out_channels, K=2)]
        elif kind == 'gat':
            heads = 8
            edge_dim = 1 if weighted else None
            layers = [GATConv(in_channels, max(h // heads, 1), heads=heads,
                              edge_dim=edge_dim),
                      GATConv(max(h // heads, 1) * heads, out_channels,
                              edge_dim=edge_dim)]
        elif kind == 'sgc':
            layers = [SGConv(in_channels, out_channels, K=2)]
        elif kind == 'appnp':
            layers = [torch.nn.Linear(in_channels, h),
                      torch.nn.Linear(h, out_channels),
                      APPNP(K=10, alpha=0.1)]
        else:
            layers = [MixHopConv(in_channels, h, powers=[0, 1, 2]),
                      torch.nn.Linear(3 * h, out_channels)]
        self.layers = torch.nn.ModuleList(layers)

    def reset_parameters(self):
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_weight: Optional[Tensor] = None) -> Tensor:
        drop = torch.nn.functional.dropout
        x = drop(x, self.dropout, self.training)
        first, rest = self.layers[0], self.layers[1:]
        if self.kind == 'sgc':
            return first(x, edge_index, edge_weight)
        x = self._call(first, x, edge_index, edge_weight)
        x = torch.nn.functional.elu(x) if self.kind == 'gat' else x.relu()
        x = drop(x, self.dropout, self.training)
        x = self._call(rest[0], x, edge_index, edge_weight)
        if self.kind == 'appnp':
            x = rest[1](x, edge_index, edge_weight)
        return x

    def _call(self, layer, x, edge_index, edge_weight):
        if isinstance(layer, torch.nn.Linear):
            return layer(x)
        if isinstance(layer, GATConv):
            attr = edge_weight.view(-1, 1) if self.weighted else None
            return layer(x, edge_index, edge_attr=attr)
        return layer(x, edge_index, edge_weight)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.kind!r}, '
                f'{self.in_channels}, {self.hidden_channels}, '
                f'{self.out_channels}, dropout={self.dropout})')


def label_propagation(y: Tensor, train_index: Tensor, graph: Graph,
                      alpha: float = 0.9, num_layers: int = 50) -> Tensor:
    r"""Label propagation (Zhou et al., 2004) from the labelled nodes
    :obj:`train_index` over :obj:`graph`; returns class scores
    :math:`(N, C)`."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    model = LabelPropagation(num_layers=num_layers, alpha=alpha)
    ei, w = gcn_norm(graph.edge_index, graph.edge_weight, y.numel(),
                     add_self_loops=False)
    return model(y, ei, mask=train_index, edge_weight=w)



class SemanticAttentionGNN(torch.nn.Module):
    r"""The multi-graph GNN of HAN ("Heterogeneous Graph Attention Network",
    Wang et al., WWW 2019) with GCN layers: one two-layer GCN per view
    graph, combined by semantic attention over the views,

    .. math::
        \mathbf{Z}_m = \mathrm{GCN}_m(\mathbf{X}, \mathcal{E}_m), \qquad
        \beta_m = \mathrm{softmax}_m \Big( \frac{1}{N} \sum_{i}
        \mathbf{q}^\top \tanh(\mathbf{W} \mathbf{z}_{m,i} + \mathbf{b})
        \Big), \qquad \mathbf{Y} = \sum_m \beta_m \mathbf{Z}_m.

    HAN learns node-level attention inside each graph as well; here each
    view's graph is convolved by a GCN (as :class:`GNN` :obj:`"gcn"` does),
    so that the comparison isolates how the views are combined. With one
    view it is that GCN.

    Args:
        num_views (int): :math:`M`, the graphs.
        in_channels (int): Input width.
        hidden_channels (int): Hidden width of each GCN.
        out_channels (int): Classes.
        dropout (float, optional): Dropout probability. (default: :obj:`0.5`)
        attention_channels (int, optional): Width of :math:`\mathbf{W}`.
            (default: :obj:`16`)

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, one graph per view
          (:class:`Graph`)
        - **output:** logits :math:`(N, F_{out})`
    """

    def __init__(self, num_views: int, in_channels: int,
                 hidden_channels: int, out_channels: int,
                 dropout: float = 0.5, attention_channels: int = 16):
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.convs = torch.nn.ModuleList([
            GNN('gcn', in_channels, hidden_channels, out_channels, dropout)
            for _ in range(num_views)])
        self.project = torch.nn.Linear(out_channels, attention_channels)
        self.query = torch.nn.Linear(attention_channels, 1, bias=False)

    def reset_parameters(self):
        for conv in self.convs:
            conv.reset_parameters()
        self.project.reset_parameters()
        self.query.reset_parameters()

    def view_attention(self, z: Tensor) -> Tensor:
        r""":math:`\beta` :math:`(M,)` of stacked view outputs
        :math:`(M, N, F_{out})`."""
        return self.query(torch.tanh(self.project(z))).mean(dim=1).view(-1) \
            .softmax(dim=0)

    def forward(self, x: Tensor, graphs: Sequence[Graph]) -> Tensor:
        if len(graphs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} graphs, got "
                             f"{len(graphs)}")
        z = torch.stack([conv(x, g.edge_index, g.edge_weight)
                         for conv, g in zip(self.convs, graphs)])
        return (self.view_attention(z).view(-1, 1, 1) * z).sum(dim=0)

    def __repr__(self) -> str:
        first = self.convs[0]
        return (f'{self.__class__.__name__}(num_views={len(self.convs)}, '
                f'{first.in_channels}, {first.hidden_channels}, '
                f'{first.out_channels}, dropout={first.dropout})')
