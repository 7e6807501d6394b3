import math

import pytest
import torch

from pyg_lego import build_relation_graph
from pyg_lego.diagnostics import (edge_homophily, graph_quality, view_overlap,
                                  view_quality)


def _tiny():
    # Nodes 0, 1 in class 0, node 2 in class 1; self-loops are ignored.
    ei = torch.tensor([[0, 0, 1, 1, 2, 0, 2], [0, 1, 0, 2, 1, 2, 0]])
    y = torch.tensor([0, 0, 1])
    return ei, y


def test_edge_homophily_known_answer():
    ei, y = _tiny()
    # Off-diagonal edges: (0,1) (1,0) same; (1,2) (2,1) (0,2) (2,0) not.
    assert edge_homophily(ei, y) == pytest.approx(2 / 6)
    w = torch.tensor([5.0, 3.0, 3.0, 1.0, 1.0, 0.0, 0.0])
    assert edge_homophily(ei, y, w) == pytest.approx(6 / 8)
    q = graph_quality(ei, y, w)
    # Zero-weight edges are left out of every measure.
    assert q == pytest.approx({'homophily': 2 / 4, 'weighted_homophily': 6 / 8,
                               'edges_per_node': 4 / 3})
    assert graph_quality(ei, y)['edges_per_node'] == pytest.approx(2.0)


def test_edge_homophily_empty_and_errors():
    y = torch.tensor([0, 1])
    assert math.isnan(edge_homophily(torch.tensor([[0, 1], [0, 1]]), y))
    ei, y3 = _tiny()
    with pytest.raises(ValueError, match='non-negative'):
        edge_homophily(ei, y3, -torch.ones(7))
    with pytest.raises(ValueError, match='edge_weight must have shape'):
        edge_homophily(ei, y3, torch.ones(6))
    with pytest.raises(ValueError, match='one class label per node'):
        edge_homophily(ei, y3[:, None])


def test_view_quality():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(10)
    good = torch.nn.functional.one_hot(y).double() + \
        0.1 * torch.randn(20, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    data = build_relation_graph({'good': good, 'noise': noise}, k=3)
    q = view_quality(data, y)
    assert set(q) == {'pattern', 'good', 'noise'}
    assert q['good']['weighted_homophily'] > q['noise']['weighted_homophily']
    assert q['pattern']['edges_per_node'] == pytest.approx(
        int((data.edge_index[0] != data.edge_index[1]).sum()) / 20)


def test_view_overlap_known_answer():
    ei, _ = _tiny()
    # Six off-diagonal edges; view 0 scores four, view 1 three, both two.
    attr = torch.tensor([[1.0, 1.0], [0.5, 0.2], [0.5, 0.0], [0.0, 0.3],
                         [0.2, 0.0], [0.0, 0.4], [0.1, 0.0]])
    out = view_overlap(ei, attr)
    assert out['per_view'] == pytest.approx([4 / 6, 3 / 6])
    assert out['all_views'] == pytest.approx(1 / 6)
    # Given graphs with no edge in common leave a product no edge.
    from pyg_lego import GivenGraph
    a = GivenGraph(torch.tensor([[0, 1], [1, 0]]))
    b = GivenGraph(torch.tensor([[1, 2], [2, 1]]))
    data = build_relation_graph({'a': a, 'b': b}, num_nodes=3)
    out = view_overlap(data.edge_index, data.edge_attr)
    assert out['per_view'] == pytest.approx([0.5, 0.5])
    assert out['all_views'] == 0.0
    loops = torch.tensor([[0, 1], [0, 1]])
    assert math.isnan(view_overlap(loops, torch.ones(2, 2))['all_views'])
    with pytest.raises(ValueError, match='edge_attr must have shape'):
        view_overlap(ei, torch.ones(7))
