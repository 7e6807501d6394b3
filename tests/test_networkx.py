import networkx as nx
import pytest
import torch

from pyg_lego.data import (GivenGraph, NetworkXView, build_relation_graph,
                           from_networkx_view, to_networkx_fused)


def _weighted_graph():
    g = nx.Graph()
    # Nodes added out of label order, one isolated: the graph's own order is
    # the order of insertion.
    g.add_node('c', x=[0.5, 1.0], y=2)
    g.add_node('a', x=[1.0, -1.0], y=0)
    g.add_node('b', x=[0.0, 2.0], y=1)
    g.add_node('d', x=[3.0, 0.0], y=1)
    g.add_node('e', x=[-2.0, 0.5], y=0)
    g.add_weighted_edges_from([('a', 'b', 0.25), ('b', 'c', 2.0),
                               ('c', 'a', 0.75), ('d', 'd', 0.5),
                               ('a', 'd', 1.5)])
    return g


def _weights(g, weight='weight'):
    return {frozenset((u, v)): w for u, v, w in g.edges(data=weight)}


def test_from_networkx_view_shapes_and_order():
    g = _weighted_graph()
    view = from_networkx_view(g, node_attrs=['x', 'y'])
    assert isinstance(view, NetworkXView)
    assert isinstance(view.graph, GivenGraph)
    assert view.nodes == list(g.nodes) == ['c', 'a', 'b', 'd', 'e']
    ei, w = view.graph.edge_index, view.graph.edge_weight
    assert ei.shape == (2, g.number_of_edges()) and ei.dtype == torch.long
    assert w.shape == (g.number_of_edges(),)
    assert w.dtype == torch.get_default_dtype()
    for (i, j), weight in zip(ei.t().tolist(), w.tolist()):
        assert g[view.nodes[i]][view.nodes[j]]['weight'] == weight
    assert view.node_attrs['x'].shape == (5, 2)
    for i, node in enumerate(view.nodes):
        assert view.node_attrs['x'][i].tolist() == g.nodes[node]['x']
        assert int(view.node_attrs['y'][i]) == g.nodes[node]['y']
    assert from_networkx_view(g).node_attrs == {}


def test_from_networkx_view_given_node_order():
    g = _weighted_graph()
    order = ['e', 'd', 'z', 'c', 'b', 'a']  # 'z' is not in the graph
    view = from_networkx_view(g, nodes=order)
    assert view.nodes == order
    ei, w = view.graph.edge_index, view.graph.edge_weight
    got = {frozenset((order[i], order[j])): x
           for (i, j), x in zip(ei.t().tolist(), w.tolist())}
    assert got == _weights(g)
    assert not bool((ei == order.index('z')).any())


def test_round_trip_keeps_weights_and_node_attributes():
    g = _weighted_graph()
    view = from_networkx_view(g, node_attrs=['x', 'y'], dtype=torch.float64)
    # Both directions, as in a relationship graph's symmetric pattern.
    ei = view.graph.edge_index
    loops = ei[0] == ei[1]
    both = torch.cat([ei, ei[:, ~loops].flip(0)], dim=1)
    w = torch.cat([view.graph.edge_weight,
                   view.graph.edge_weight[~loops]])
    back = to_networkx_fused(both, w, len(view.nodes),
                             node_attrs=view.node_attrs, nodes=view.nodes)
    assert isinstance(back, nx.Graph) and not back.is_directed()
    assert list(back.nodes) == list(g.nodes)
    assert _weights(back) == _weights(g)
    assert dict(back.nodes(data=True)) == dict(g.nodes(data=True))
    directed = to_networkx_fused(both, w, len(view.nodes), directed=True)
    assert directed.is_directed()
    assert directed.number_of_edges() == both.size(1)
    for (i, j), x in zip(both.t().tolist(), w.tolist()):
        assert directed[i][j]['weight'] == x


def test_a_view_of_the_relationship_graph():
    g = _weighted_graph()
    view = from_networkx_view(g, node_attrs=['x'], self_loop_weight=0.1)
    x = view.node_attrs['x'].to(torch.get_default_dtype())
    data = build_relation_graph({'feat': x, 'net': view.graph}, k=1)
    row, col = data.edge_index
    pairs = _weights(g)
    # Every edge of the networkx graph is in the shared pattern, scored with
    # its weight; pairs it lacks score 0, self-loops it lacks 0.1.
    for e, (i, j) in enumerate(zip(row.tolist(), col.tolist())):
        pair = frozenset((view.nodes[i], view.nodes[j]))
        expected = pairs.get(pair, 0.1 if i == j else 0.0)
        assert data.edge_attr[e, 1].item() == pytest.approx(expected)
    present = {frozenset((view.nodes[i], view.nodes[j]))
               for i, j in zip(row.tolist(), col.tolist())}
    assert set(pairs) <= present
    # A fused graph of it goes back to networkx on the same nodes.
    fused = data.edge_attr.mean(-1)
    out = to_networkx_fused(data.edge_index, fused, data.num_nodes,
                            node_attrs={'x': data.x_feat}, nodes=view.nodes)
    assert out.number_of_nodes() == data.num_nodes
    for e, (i, j) in enumerate(zip(row.tolist(), col.tolist())):
        got = out[view.nodes[i]][view.nodes[j]]['weight']
        assert got == pytest.approx(fused[e].item())


def test_directed_and_multigraph_views():
    d = nx.DiGraph()
    d.add_weighted_edges_from([(0, 1, 0.5), (1, 0, 2.0), (1, 2, 1.0)])
    view = from_networkx_view(d)
    data = build_relation_graph({'d': view.graph}, k=1, num_nodes=3)
    scores = {tuple(e): s for e, s in zip(data.edge_index.t().tolist(),
                                          data.edge_attr[:, 0].tolist())}
    # Symmetric, each pair with its larger weight.
    assert scores[(0, 1)] == scores[(1, 0)] == 2.0
    assert scores[(1, 2)] == scores[(2, 1)] == 1.0
    m = nx.MultiGraph()
    m.add_edge(0, 1, weight=0.25)
    m.add_edge(0, 1, weight=0.75)
    view = from_networkx_view(m)
    assert view.graph.edge_index.size(1) == 2
    data = build_relation_graph({'m': view.graph}, k=1, num_nodes=2)
    assert data.edge_attr[(data.edge_index[0] != data.edge_index[1]), 0] \
        .tolist() == [0.75, 0.75]


def test_unweighted_and_default_weights():
    g = nx.path_graph(4)
    view = from_networkx_view(g, weight=None)
    assert view.graph.edge_weight is None
    assert view.graph.edge_index.size(1) == 3
    g.add_edge(0, 3, weight=0.5)
    view = from_networkx_view(g, default_weight=2.0)
    got = {frozenset((i, j)): w for (i, j), w in
           zip(view.graph.edge_index.t().tolist(),
               view.graph.edge_weight.tolist())}
    assert got == {frozenset((0, 1)): 2.0, frozenset((1, 2)): 2.0,
                   frozenset((2, 3)): 2.0, frozenset((0, 3)): 0.5}
    empty = from_networkx_view(nx.empty_graph(3))
    assert empty.graph.edge_index.shape == (2, 0)
    assert empty.nodes == [0, 1, 2]


def test_to_networkx_fused_keeps_isolated_nodes_and_zero_weights():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    w = torch.tensor([[0.5], [0.5], [0.0], [0.0]])
    out = to_networkx_fused(ei, w, 4, weight='fused')
    assert sorted(out.nodes) == [0, 1, 2, 3]
    assert out[0][1]['fused'] == 0.5 and out[1][2]['fused'] == 0.0
    assert out.number_of_edges() == 2
    plain = to_networkx_fused(ei, None, 4)
    assert plain.number_of_edges() == 2 and plain[0][1] == {}


def test_from_networkx_view_errors():
    g = _weighted_graph()
    with pytest.raises(TypeError, match='networkx graph'):
        from_networkx_view({'a': 'b'})
    with pytest.raises(ValueError, match="no attribute 'w'"):
        from_networkx_view(g, weight='w')
    with pytest.raises(ValueError, match="not in nodes"):
        from_networkx_view(g, nodes=['a', 'b'])
    with pytest.raises(ValueError, match="twice"):
        from_networkx_view(g, nodes=['a', 'a', 'b', 'c', 'd', 'e'])
    with pytest.raises(ValueError, match="no attribute 'label'"):
        from_networkx_view(g, node_attrs=['label'])
    with pytest.raises(ValueError, match="no attribute 'x'"):
        from_networkx_view(g, nodes=list(g.nodes) + ['z'], node_attrs=['x'])
    bad = nx.Graph()
    bad.add_edge(0, 1, weight=-1.0)
    with pytest.raises(ValueError, match='>= 0'):
        from_networkx_view(bad)
    bad[0][1]['weight'] = float('nan')
    with pytest.raises(ValueError, match='finite'):
        from_networkx_view(bad)
    bad[0][1]['weight'] = 'heavy'
    with pytest.raises(ValueError, match='numbers'):
        from_networkx_view(bad)
    with pytest.raises(ValueError, match='default_weight'):
        from_networkx_view(g, default_weight=-1.0)
    g.nodes['a']['x'] = [1.0]
    with pytest.raises(ValueError, match="node attribute 'x'"):
        from_networkx_view(g, node_attrs=['x'])


def test_to_networkx_fused_errors():
    ei = torch.tensor([[0, 1], [1, 0]])
    w = torch.tensor([0.5, 0.25])
    with pytest.raises(ValueError, match='not symmetric'):
        to_networkx_fused(ei, w, 2)
    assert to_networkx_fused(ei, w, 2, directed=True)[1][0]['weight'] == 0.25
    with pytest.raises(ValueError, match='one weight per edge'):
        to_networkx_fused(ei, torch.ones(2, 3), 2)
    with pytest.raises(ValueError, match='out of range'):
        to_networkx_fused(ei, None, 1)
    with pytest.raises(ValueError, match='num_nodes'):
        to_networkx_fused(ei, None, -1)
    with pytest.raises(ValueError, match='duplicate'):
        to_networkx_fused(torch.tensor([[0, 0], [1, 1]]), None, 2)
    with pytest.raises(ValueError, match='distinct'):
        to_networkx_fused(ei, None, 2, nodes=['a', 'a'])
    with pytest.raises(ValueError, match="'x' must be a tensor with 2 rows"):
        to_networkx_fused(ei, None, 2, node_attrs={'x': torch.ones(3)})
