r"""The adaptive score maps against the dense oracle, forward and gradients
with respect to the features, on kNN and complete patterns."""
import pytest
import torch

from pyg_lego import build_relation_graph, dense
from pyg_lego.data import relation_scores
from pyg_lego.data.calibration import adaptive_score_map, neighbour_distances

from .conftest import dense_at, random_views

MAPS = ['local', 'snf']


@pytest.mark.parametrize('score_map', MAPS)
@pytest.mark.parametrize('n,k', [(12, 3), (30, 5), (9, 8), (9, 20)])
def test_adaptive_maps_equal_dense(score_map, n, k):
    # k >= n - 1 builds the complete pattern.
    views = random_views(n, (4, 6), seed=n + k)
    data = build_relation_graph(views, k=k, score_map=score_map)
    mask, r = dense.relation_graph(views, k, score_map=score_map)
    assert int(mask.sum()) == data.edge_index.size(1)
    torch.testing.assert_close(data.edge_attr, dense_at(r, data.edge_index),
                               atol=1e-12, rtol=1e-12)
    assert data.score_map == score_map


@pytest.mark.parametrize('score_map', MAPS)
def test_adaptive_maps_gradients_equal_dense(score_map):
    views = random_views(15, (5, 3), seed=3)
    data = build_relation_graph(views, k=4, score_map=score_map)
    ei = data.edge_index
    leaves = {n: v.clone().requires_grad_() for n, v in views.items()}
    weight = torch.randn(ei.size(1), 2, dtype=torch.float64)
    sparse = relation_scores(leaves, ei, score_map=score_map, k=4)
    (sparse * weight).sum().backward()
    grads = {n: v.grad.clone() for n, v in leaves.items()}
    for v in leaves.values():
        v.grad = None
    _, r = dense.relation_graph(leaves, 4, score_map=score_map)
    (dense_at(r, ei) * weight).sum().backward()
    for name, v in leaves.items():
        assert torch.isfinite(grads[name]).all()
        torch.testing.assert_close(grads[name], v.grad, atol=1e-10,
                                   rtol=1e-10)


def test_adaptive_maps_separate_related_pairs():
    # Two tight clusters far apart, all pairs scored, bandwidths from each
    # node's 5 nearest (its own cluster): within-cluster pairs score near 1
    # and cross pairs near 0, where affine keeps them near its middle.
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn(2, 16, generator=gen, dtype=torch.float64)
    x = centre.repeat_interleave(10, 0) + \
        0.05 * torch.randn(20, 16, generator=gen, dtype=torch.float64)
    y = torch.arange(2).repeat_interleave(10)
    ei = build_relation_graph({'x': x}, k=19).edge_index
    same = y[ei[0]] == y[ei[1]]
    affine = relation_scores({'x': x}, ei, score_map='affine')[:, 0]
    assert float(affine[~same].max()) > 0.2
    for score_map in MAPS:
        s = relation_scores({'x': x}, ei, score_map=score_map, k=5)[:, 0]
        assert float(s[~same].max()) < 1e-3
        assert float(s[same].min()) > 100 * float(s[~same].max())


def test_self_loops_score_one():
    views = random_views(10, (3, ), seed=1)
    for score_map in MAPS:
        data = build_relation_graph(views, k=3, score_map=score_map)
        loop = data.edge_index[0] == data.edge_index[1]
        torch.testing.assert_close(data.edge_attr[loop],
                                   torch.ones_like(data.edge_attr[loop]))


def test_neighbour_distances_known_answer():
    # Node 0 has neighbours at distances 3, 1, 2; node 1 one neighbour.
    ei = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 1, 0]])
    dist = torch.tensor([0.0, 3.0, 1.0, 2.0, 0.0, 3.0])
    kth, mean = neighbour_distances(dist, ei, 4, k=2)
    torch.testing.assert_close(kth, torch.tensor([2.0, 3.0, 0.0, 0.0]))
    torch.testing.assert_close(mean, torch.tensor([1.5, 3.0, 0.0, 0.0]))


def test_adaptive_map_errors():
    views = random_views(8, (3, ), seed=2)
    ei = build_relation_graph(views, k=3).edge_index
    with pytest.raises(ValueError, match='needs k'):
        relation_scores(views, ei, score_map='local')
    with pytest.raises(ValueError, match='cosine'):
        build_relation_graph(views, k=3, similarity='rbf', score_map='snf')
    with pytest.raises(ValueError, match='score_map must be one of'):
        adaptive_score_map(torch.zeros(3), ei[:, :3], 8, 2, 'affine')
    with pytest.raises(ValueError, match='k must be'):
        adaptive_score_map(torch.zeros(3), ei[:, :3], 8, 0, 'local')


def test_propagated_mode_rejects_adaptive_maps():
    from pyg_lego.nn import GraphPowerConv
    for score_map in MAPS:
        with pytest.raises(ValueError, match="use 'elementwise' or 'masked'"):
            GraphPowerConv(2, mode='propagated', score_map=score_map)
        GraphPowerConv(2, mode='masked', score_map=score_map)
