r"""Mini-batches of graphs of different sizes equal the graphs one at a
time."""
import pytest
import torch
from torch_geometric.loader import DataLoader

from pyg_lego import LEGO, build_relation_graph
from pyg_lego.nn import GraphSpaceHead, node_statistics, two_hop_paths

from .conftest import random_views


def _graphs():
    sizes = [(9, 3), (14, 4), (6, 5), (20, 19), (11, 2)]
    return [build_relation_graph(random_views(n, [5, 3, 4], seed=i), k=k)
            for i, (n, k) in enumerate(sizes)]


@pytest.mark.parametrize('mode', ['elementwise', 'masked', 'propagated'])
@pytest.mark.parametrize('fusion', ['polynomial', 'linear', 'geometric'])
def test_batch_equals_one_by_one(mode, fusion):
    graphs = _graphs()
    model = LEGO(['v0', 'v1', 'v2'], P=3, mode=mode, fusion=fusion,
                 out_channels=2).double()
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    assert batch.num_graphs == len(graphs)
    fused = model.fuse(batch)
    alone = torch.cat([model.fuse(g) for g in graphs])
    assert torch.allclose(fused, alone, atol=1e-12)


def test_batched_path_index_is_offset_by_edges():
    graphs = _graphs()
    for g in graphs:
        g.path_index = two_hop_paths(g.edge_index, g.num_nodes)
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    assert torch.equal(batch.path_index,
                       two_hop_paths(batch.edge_index, batch.num_nodes))
    model = LEGO(['v0', 'v1', 'v2'], P=3, mode='masked').double()
    assert torch.allclose(model.fuse(batch),
                          torch.cat([model.fuse(g) for g in graphs]))


def test_heads_on_a_batch_equal_one_by_one():
    graphs = [build_relation_graph(random_views(n, [4, 4], seed=n), k=n - 1)
              for n in (8, 8, 5)]
    model = LEGO(['v0', 'v1'], P=2, out_channels=2).double()
    # eval(): batch norm then uses its running statistics, not the batch's.
    head = GraphSpaceHead(num_nodes=8, channels=2).double().eval()
    batch = next(iter(DataLoader(graphs, batch_size=3)))
    scores = head(model.fuse(batch), batch.edge_index, batch.batch)
    assert scores.shape == (21,)
    alone = torch.cat([head(model.fuse(g), g.edge_index) for g in graphs])
    assert torch.allclose(scores, alone, atol=1e-12)

    degree, variance = node_statistics(model.fuse(batch), batch.edge_index,
                                       batch.num_nodes, batch.batch)
    assert degree.shape == (21, 2) and variance.shape == (3, 2)
    for i, g in enumerate(graphs):
        d, v = node_statistics(model.fuse(g), g.edge_index, g.num_nodes)
        assert torch.allclose(variance[i], v[0], atol=1e-12)


def test_batch_of_graphs_with_different_view_orders_is_refused():
    a = build_relation_graph(random_views(6, [3, 4], seed=1), k=3)
    swapped = random_views(7, [3, 4], seed=2)
    b = build_relation_graph({'v1': swapped['v1'], 'v0': swapped['v0']}, k=3)
    batch = next(iter(DataLoader([a, b], batch_size=2)))
    with pytest.raises(ValueError, match='disagree on view_names'):
        LEGO(['v0', 'v1']).double().fuse(batch)


def test_graphs_of_exact_and_approximate_searches_batch_together():
    pytest.importorskip('faiss')
    views = [random_views(n, [5, 3], seed=n) for n in (120, 80)]
    approx = build_relation_graph(views[0], k=4, backend='faiss-ivf')
    exact = build_relation_graph(views[1], k=4, backend='exact')
    assert approx.knn_settings is not None and exact.knn_settings is None
    # The per-graph kNN diagnostics stay out of the batch, which PyG could
    # not collate with them in only one graph.
    for graphs in ([approx, exact], [exact, approx]):
        batch = next(iter(DataLoader(graphs, batch_size=2)))
        assert batch.num_graphs == 2 and batch.num_nodes == 200
        assert batch.knn_settings is None and batch.knn_recall is None
        assert torch.equal(batch.edge_attr, torch.cat(
            [g.edge_attr for g in graphs]))
