r"""networkx graphs in and out: a networkx graph as a given view of the
relationship graph (:func:`from_networkx_view`), and a fused graph as a
networkx graph (:func:`to_networkx_fused`). networkx is imported when they
are called."""
import math
import numbers
from typing import (Any, Dict, Hashable, Iterable, List, Mapping, NamedTuple,
                    Optional, Sequence)

import torch
from torch import Tensor
from torch_geometric.utils import coalesce

from pyg_lego.data.relation import GivenGraph
from pyg_lego.data.validation import check_edge_index


class NetworkXView(NamedTuple):
    r"""What :func:`from_networkx_view` returns."""
    #: The graph as a view; pass it to
    #: :func:`~pyg_lego.data.build_relation_graph` among the views.
    graph: GivenGraph
    #: The networkx node of every index :math:`0, \ldots, N - 1`.
    nodes: List[Hashable]
    #: Requested node attribute -> tensor :math:`(N, \ldots)` in the order
    #: of :obj:`nodes`.
    node_attrs: Dict[str, Tensor]


def _node_tensor(name: str, values: List[Any]) -> Tensor:
    if all(isinstance(v, Tensor) for v in values):
        try:
            return torch.stack(values)
        except RuntimeError as e:
            raise ValueError(f"node attribute '{name}' has tensors of "
                             f"different shapes: {e}") from None
    try:
        return torch.tensor(values)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"node attribute '{name}' cannot be made a tensor "
                         f"(numbers or equal-length lists of numbers per "
                         f"node): {e}") from None


def from_networkx_view(graph: Any, weight: Optional[str] = 'weight',
                       nodes: Optional[Iterable[Hashable]] = None,
                       node_attrs: Optional[Sequence[str]] = None,
                       default_weight: Optional[float] = None,
                       self_loop_weight: float = 1.0,
                       dtype: Optional[torch.dtype] = None) -> NetworkXView:
    r"""A networkx graph (citations, co-purchases, a social network) as a
    given view of the relationship graph, a
    :class:`~pyg_lego.data.GivenGraph` like the edge types of
    :func:`~pyg_lego.multiview.multiplex_sbm`.

    The nodes are relabelled :math:`0, \ldots, N - 1` in the order of
    :obj:`nodes` if given, else in the graph's own order
    (:obj:`list(graph.nodes)`, the order in which they were added, as
    :func:`torch_geometric.utils.from_networkx` numbers them). Pass
    :obj:`nodes` when the graph must line up with the rows of other views'
    features: it may hold nodes that the graph lacks (they get no edges),
    but every node of the graph must be in it.

    Every edge becomes one entry of :obj:`edge_index` with the value of its
    attribute :obj:`weight`; :class:`~pyg_lego.data.GivenGraph` makes the
    view symmetric, so an edge of a directed graph counts in both
    directions, and where both directions or the parallel edges of a
    multigraph are given, the pair takes the largest weight.

    Args:
        graph (networkx.Graph): Any networkx graph (directed, multigraph).
        weight (str, optional): The edge attribute holding the weights, or
            :obj:`None` for weight :obj:`1` on every edge.
            (default: :obj:`"weight"`)
        nodes (iterable, optional): The networkx node of each index
            :math:`0, \ldots, N - 1`. (default: :obj:`list(graph.nodes)`)
        node_attrs (list of str, optional): Node attributes to keep, each as
            a tensor :math:`(N, \ldots)` (every node needs them).
            (default: :obj:`None`)
        default_weight (float, optional): Weight of an edge without the
            attribute :obj:`weight`; :obj:`None` makes it an error.
            (default: :obj:`None`)
        self_loop_weight (float, optional): Score of a node with itself
            where the graph has no self-loop on it, see
            :class:`~pyg_lego.data.GivenGraph`. (default: :obj:`1.0`)
        dtype (torch.dtype, optional): Dtype of the weights.
            (default: :func:`torch.get_default_dtype`)

    Returns:
        :class:`NetworkXView` :obj:`(graph, nodes, node_attrs)`.

    Example:
        >>> import networkx as nx
        >>> g = nx.karate_club_graph()
        >>> view = from_networkx_view(g, weight='weight')
        >>> x = torch.randn(len(view.nodes), 8)  # rows in view.nodes order
        >>> data = build_relation_graph({'x': x, 'club': view.graph}, k=5)
    """
    import networkx as nx
    if not isinstance(graph, nx.Graph):
        raise TypeError(f"graph must be a networkx graph, got "
                        f"{type(graph).__name__}")
    order = list(graph.nodes) if nodes is None else list(nodes)
    index: Dict[Hashable, int] = {}
    for i, node in enumerate(order):
        if node in index:
            raise ValueError(f"nodes lists {node!r} twice")
        index[node] = i
    if nodes is not None:
        absent = [n for n in graph.nodes if n not in index]
        if absent:
            raise ValueError(f"{len(absent)} node(s) of the graph are not in "
                             f"nodes (first: {absent[0]!r}); nodes must give "
                             f"every node of the graph its index")
    if default_weight is not None and not (
            math.isfinite(float(default_weight)) and default_weight >= 0):
        raise ValueError(f"default_weight must be finite and >= 0, got "
                         f"{default_weight!r}")
    dtype = dtype or torch.get_default_dtype()
    rows: List[int] = []
    cols: List[int] = []
    weights: List[float] = []
    for u, v, attrs in graph.edges(data=True):
        rows.append(index[u])
        cols.append(index[v])
        if weight is None:
            continue
        w = attrs.get(weight, default_weight)
        if w is None:
            raise ValueError(f"edge ({u!r}, {v!r}) has no attribute "
                             f"'{weight}'; pass default_weight, or "
                             f"weight=None for unweighted edges")
        if isinstance(w, Tensor):
            w = w.item()
        if isinstance(w, bool) or not isinstance(w, numbers.Real):
            raise ValueError(f"edge ({u!r}, {v!r}) has '{weight}' = {w!r}; "
                             f"weights must be numbers")
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"edge ({u!r}, {v!r}) has '{weight}' = {w}; "
                             f"relation scores must be finite and >= 0")
        weights.append(float(w))
    edge_index = torch.tensor([rows, cols], dtype=torch.long).view(2, -1)
    edge_weight = None if weight is None else \
        torch.tensor(weights, dtype=dtype)
    kept: Dict[str, Tensor] = {}
    for name in node_attrs or []:
        values = []
        for node in order:
            if node not in graph or name not in graph.nodes[node]:
                raise ValueError(f"node {node!r} has no attribute '{name}'; "
                                 f"node_attrs must be given on every node")
            values.append(graph.nodes[node][name])
        kept[name] = _node_tensor(name, values)
    return NetworkXView(GivenGraph(edge_index, edge_weight,
                                   float(self_loop_weight)), order, kept)


def to_networkx_fused(edge_index: Tensor, edge_weight: Optional[Tensor],
                      num_nodes: int,
                      node_attrs: Optional[Mapping[str, Tensor]] = None,
                      nodes: Optional[Sequence[Hashable]] = None,
                      weight: str = 'weight', directed: bool = False,
                      atol: float = 1e-6) -> Any:
    r"""A fused graph (e.g. the weights :class:`~pyg_lego.nn.LEGO` puts on
    the relationship graph's :obj:`edge_index`) as a networkx graph.

    Node :math:`i` is :obj:`i`, or :obj:`nodes[i]` (e.g. the
    :attr:`NetworkXView.nodes` of :func:`from_networkx_view`, for a round
    trip); every node is added, isolated ones too, in index order. Each edge
    carries its weight as the attribute :obj:`weight`, and every row of
    every tensor in :obj:`node_attrs` goes to its node (as a number or a
    nested list, by :meth:`torch.Tensor.tolist`). Zero weights are kept
    (drop them first with :func:`~pyg_lego.nn.drop_zero_edges`).

    Undirected (the default), both directions of an edge become one edge;
    their weights must agree within :obj:`atol` (the edge takes their mean),
    else pass :obj:`directed=True` for a :class:`networkx.DiGraph`.

    Args:
        edge_index (torch.Tensor): Edges :math:`(2, |\mathcal{E}|)`, no
            duplicates.
        edge_weight (torch.Tensor, optional): Weights
            :math:`(|\mathcal{E}|,)` or :math:`(|\mathcal{E}|, 1)`; without
            them the edges carry no attribute.
        num_nodes (int): :math:`N`.
        node_attrs (Mapping[str, torch.Tensor], optional): Attribute name ->
            tensor :math:`(N, \ldots)`. (default: :obj:`None`)
        nodes (list, optional): The networkx node of each index.
            (default: :obj:`None`, the indices themselves)
        weight (str, optional): Name of the edge attribute.
            (default: :obj:`"weight"`)
        directed (bool, optional): Return a :class:`networkx.DiGraph`.
            (default: :obj:`False`)
        atol (float, optional): Tolerance between the two directions'
            weights of an undirected graph. (default: :obj:`1e-6`)

    Returns:
        :class:`networkx.Graph` or :class:`networkx.DiGraph`.
    """
    import networkx as nx
    if isinstance(num_nodes, bool) or \
            not isinstance(num_nodes, numbers.Integral) or num_nodes < 0:
        raise ValueError(f"num_nodes must be an integer >= 0, got "
                         f"{num_nodes!r}")
    num_nodes = int(num_nodes)
    check_edge_index(edge_index, num_nodes)
    num_edges = edge_index.size(1)
    if edge_weight is not None:
        if not isinstance(edge_weight, Tensor):
            raise TypeError(f"edge_weight must be a torch.Tensor, got "
                            f"{type(edge_weight).__name__}")
        if edge_weight.dim() == 2 and edge_weight.size(1) == 1:
            edge_weight = edge_weight.view(-1)
        if edge_weight.dim() != 1 or edge_weight.numel() != num_edges:
            raise ValueError(f"edge_weight must have shape [{num_edges}] or "
                             f"[{num_edges}, 1] (one weight per edge; select "
                             f"one channel of a multi-channel fusion), got "
                             f"{list(edge_weight.shape)}")
    if nodes is not None:
        nodes = list(nodes)
        if len(nodes) != num_nodes or len(set(nodes)) != num_nodes:
            raise ValueError(f"nodes must list {num_nodes} distinct nodes, "
                             f"got {len(nodes)} ({len(set(nodes))} distinct)")
    for name, value in (node_attrs or {}).items():
        if not isinstance(value, Tensor) or value.dim() == 0 or \
                value.size(0) != num_nodes:
            shape = list(value.shape) if isinstance(value, Tensor) else \
                type(value).__name__
            raise ValueError(f"node attribute '{name}' must be a tensor with "
                             f"{num_nodes} rows, got {shape}")
    # PyG's coalesce, as fast as torch.unique here (1.09x its time at
    # 2.1M edges, benchmarks/results/library_replacements.md).
    if coalesce(edge_index, num_nodes=num_nodes).size(1) != num_edges:
        raise ValueError("edge_index has duplicate edges; coalesce it first")
    key = edge_index[0] * num_nodes + edge_index[1]
    row, col = edge_index.tolist()
    w = None if edge_weight is None else edge_weight.detach().cpu()
    if not directed and num_edges > 0:
        # Each pair once, from the direction with row <= col (or the only
        # one given); the reverse's weight must agree.
        # to_undirected gives no reverse ids, needed to compare weights
        # (benchmarks/results/library_replacements.md, unmatched pieces).
        rev = edge_index[1] * num_nodes + edge_index[0]
        order = torch.argsort(key)
        pos = torch.searchsorted(key[order], rev).clamp_max(num_edges - 1)
        has_rev = key[order][pos] == rev
        mate = torch.where(has_rev, order[pos], torch.full_like(pos, -1))
        keep = (edge_index[0] <= edge_index[1]) | ~has_rev
        if w is not None:
            mate_cpu = mate.cpu()
            both = has_rev.cpu()
            other = torch.where(both, w[mate_cpu.clamp_min(0)], w)
            bad = both & ~torch.isclose(w, other, rtol=0.0, atol=atol)
            if bool(bad.any()):
                e = int(bad.nonzero()[0])
                raise ValueError(
                    f"edge ({row[e]}, {col[e]}) weighs {float(w[e])} but its "
                    f"reverse {float(other[e])}: the fused graph is not "
                    f"symmetric; pass directed=True")
            w = (w + other) / 2
        keep_list = keep.cpu().tolist()
    else:
        keep_list = [True] * num_edges
    out = nx.DiGraph() if directed else nx.Graph()
    label = (lambda i: i) if nodes is None else nodes.__getitem__
    attrs = {name: value.detach().cpu().tolist()
             for name, value in (node_attrs or {}).items()}
    out.add_nodes_from((label(i), {name: value[i]
                                   for name, value in attrs.items()})
                       for i in range(num_nodes))
    ws = None if w is None else w.tolist()
    for e in range(num_edges):
        if not keep_list[e]:
            continue
        if ws is None:
            out.add_edge(label(row[e]), label(col[e]))
        else:
            out.add_edge(label(row[e]), label(col[e]), **{weight: ws[e]})
    return out
