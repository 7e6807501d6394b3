r"""Neighbour mini-batches over a fused graph: the built-in sampler draws
valid subgraphs, full neighbourhoods reproduce full-graph inference, and
training on mini-batches learns."""
import pytest
import torch
from torch_geometric.nn import GCNConv, GraphConv

from pyg_lego import LEGO, build_relation_graph
from pyg_lego.nn import PropagationHead
from pyg_lego.training import (TorchNeighborSampler, epoch_seeds,
                               full_graph_inference, fused_graph,
                               neighbor_inference, neighbor_loader,
                               planted_views, train_epoch)


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    # Many small scatter kernels: on a loaded 2-core runner, intra-op
    # threads spin against each other and cost far more than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def graph():
    views, y = planted_views(800, num_classes=4, seed=1)
    data = build_relation_graph(views, k=5)
    torch.manual_seed(0)
    lego = LEGO(data.view_names, P=2, mode='masked', out_channels=2)
    return fused_graph(data, lego, y=y), data, lego


def test_fused_graph_carries_normalised_fused_weights(graph):
    fused, data, lego = graph
    g = lego.fuse(data).detach()
    keep = (g != 0).any(dim=-1)
    assert not keep.all(), "LEGO's default top-k must drop edges here"
    assert torch.equal(fused.edge_index, data.edge_index[:, keep])
    assert fused.edge_attr.shape == (int(keep.sum()), 2)
    assert torch.equal(fused.x, torch.cat([data.x_view0, data.x_view1], -1))
    assert not fused.edge_attr.requires_grad
    # D^-1/2 G D^-1/2 on the whole graph: undoing it with the full-graph
    # degrees of G gives LEGO's fused weights back.
    row, col = data.edge_index
    deg = torch.zeros(800, 2).index_add(0, row, g)
    row, col = row[keep], col[keep]
    assert torch.allclose(fused.edge_attr * (deg[row] * deg[col]).sqrt(),
                          g[keep], atol=1e-6)
    raw = fused_graph(data, lego, normalize=False, x=data.x_view1)
    assert torch.allclose(raw.edge_attr, g[keep]) and raw.x is data.x_view1
    with pytest.raises(ValueError, match='rows'):
        fused_graph(data, lego, x=data.x_view1[:10])


@pytest.mark.parametrize('num_neighbors', [[3, 2], [-1, 4], [1]])
def test_sampler_draws_valid_subgraphs(graph, num_neighbors):
    fused = graph[0]
    torch.manual_seed(3)
    loader = neighbor_loader(fused, num_neighbors, batch_size=64,
                             shuffle=True)
    if not isinstance(loader.node_sampler, TorchNeighborSampler):
        pytest.skip('pyg-lib or torch-sparse present: PyG samples itself')
    batch = next(iter(loader))
    n_id, e_id = batch.n_id, batch.e_id
    # Every sampled edge is an edge of the graph, with its own fused weight.
    glob = n_id[batch.edge_index]
    assert torch.equal(glob, fused.edge_index[:, e_id])
    assert torch.equal(batch.edge_attr, fused.edge_attr[e_id])
    assert torch.equal(batch.x, fused.x[n_id])
    assert n_id.unique().numel() == n_id.numel()
    # Hop 1: each seed gets min(k, in-degree) incoming edges, no repeats.
    seeds = n_id[:batch.batch_size]
    in_deg = torch.bincount(fused.edge_index[1], minlength=fused.num_nodes)
    hop1 = batch.edge_index[:, :batch.num_sampled_edges[0]]
    got = torch.bincount(hop1[1], minlength=batch.batch_size)
    want = in_deg[seeds] if num_neighbors[0] < 0 else \
        in_deg[seeds].clamp_max(num_neighbors[0])
    assert torch.equal(got, want)
    assert e_id.unique().numel() == e_id.numel()
    assert batch.num_sampled_nodes[0] == batch.batch_size


def test_sampler_rejects_what_it_cannot_do(graph):
    fused = graph[0]
    loader = neighbor_loader(fused, [2], batch_size=8)
    if not isinstance(loader.node_sampler, TorchNeighborSampler):
        pytest.skip('pyg-lib or torch-sparse present: PyG samples itself')
    with pytest.raises(ValueError, match='replace=True'):
        TorchNeighborSampler(fused, [2], replace=True)
    with pytest.raises(ValueError, match='disjoint'):
        neighbor_loader(fused, [2], batch_size=8, disjoint=True)


@pytest.mark.parametrize('conv,kwargs', [(GraphConv, {}),
                                         (GCNConv, dict(normalize=False))])
def test_full_neighbourhood_minibatches_equal_full_graph(graph, conv, kwargs):
    fused = graph[0]
    torch.manual_seed(0)
    model = PropagationHead(fused.num_features, 8, 4, num_layers=3,
                            channels=2, conv=conv, **kwargs)
    full = full_graph_inference(model, fused)
    nodes = torch.randperm(fused.num_nodes)[:120]
    mini = neighbor_inference(model, fused, num_layers=3, batch_size=40,
                              nodes=nodes)
    assert torch.allclose(mini, full[nodes], atol=1e-5, rtol=1e-5)
    # Truncated neighbourhoods are an approximation, not the same answer.
    torch.manual_seed(0)
    cut = neighbor_inference(model, fused, num_layers=3, batch_size=40,
                             nodes=nodes, num_neighbors=[2, 2, 2])
    assert not torch.allclose(cut, full[nodes], atol=1e-5)


def test_epoch_seeds_split_global_batches_between_processes():
    nodes = torch.arange(10, 50)
    one = epoch_seeds(nodes, 8, epoch=2, seed=5)
    parts = [epoch_seeds(nodes, 8, epoch=2, seed=5, rank=r, world_size=2)
             for r in range(2)]
    assert one.numel() == 40
    for t in range(5):  # global batch t is the union of the ranks' shares
        assert torch.equal(one[8 * t:8 * t + 8],
                           torch.cat([p[4 * t:4 * t + 4] for p in parts]))
    assert not torch.equal(one, epoch_seeds(nodes, 8, epoch=3, seed=5))
    with pytest.raises(ValueError, match='multiple'):
        epoch_seeds(nodes, 7, epoch=0, world_size=2)
    with pytest.raises(ValueError, match='exceeds'):
        epoch_seeds(nodes, 64, epoch=0)


def test_minibatch_training_learns_the_planted_classes(graph):
    fused = graph[0]
    torch.manual_seed(0)
    model = PropagationHead(fused.num_features, 32, 4, num_layers=2,
                            channels=2, conv=GraphConv)
    test = torch.arange(500, 800)
    before = (full_graph_inference(model, fused)[test].argmax(-1) ==
              fused.y[test]).float().mean()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(3):
        seeds = epoch_seeds(torch.arange(500), 50, epoch)
        loader = neighbor_loader(fused, [8, 4], input_nodes=seeds,
                                 batch_size=50)
        train_epoch(model, loader, opt)
    after = (full_graph_inference(model, fused)[test].argmax(-1) ==
             fused.y[test]).float().mean()
    assert after > 0.8 and after > before + 0.2
