r"""Layers: shapes, repr, reset, sparse-tensor input, caching, coefficient
tables, heads and the plotting helper."""
import pytest
import torch
from torch_geometric.nn import GraphConv

from pyg_lego import LEGO, build_relation_graph, plot_coefficients
from pyg_lego.data import relation_scores
from pyg_lego.nn import (GraphPowerConv, LEGOFusion, PropagationHead,
                         two_hop_paths)

from .conftest import random_views


@pytest.fixture
def data():
    return build_relation_graph(random_views(16, [5, 3, 4]), k=4)


def test_repr():
    assert repr(GraphPowerConv(3)) == (
        "GraphPowerConv(P=3, mode='masked', similarity='cosine', "
        "kernel='auto')")
    assert repr(LEGOFusion(2, 3)) == ("LEGOFusion(num_views=2, P=3, "
                                      "out_channels=1, kind='polynomial')")
    assert repr(LEGOFusion(3, 2, 4, rank=5)) == (
        "LEGOFusion(num_views=3, P=2, out_channels=4, kind='polynomial', "
        "rank=5)")
    assert repr(LEGO(['a', 'b'])) == (
        "LEGO(views=['a', 'b'], P=2, mode='elementwise', "
        "fusion='geometric', out_channels=1, topk=10)")
    assert repr(LEGO(['a', 'b'], mode='masked', fusion='polynomial',
                     topk=None)) == (
        "LEGO(views=['a', 'b'], P=2, mode='masked', fusion='polynomial', "
        "out_channels=1, topk=None)")
    assert repr(PropagationHead(8, 16, 2)) == (
        'PropagationHead(8, 2, num_layers=2, channels=1, conv=GCNConv)')


@pytest.mark.parametrize('kind,M,rank,shape', [
    ('linear', 3, None, (2, 3, 4)), ('geometric', 3, None, (2, 3, 4)),
    ('polynomial', 2, None, (2, 4, 4)),
    ('polynomial', 3, None, (2, 4, 3, 4)), ('polynomial', 2, 2, (2, 2, 2, 4))
])
def test_fusion_shapes_and_reset(kind, M, rank, shape):
    fusion = LEGOFusion(M, 3, out_channels=2, kind=kind, rank=rank)
    assert fusion.weight.shape == shape
    out = fusion(torch.rand(7, M, 4))
    assert out.shape == (7, 2)
    before = fusion.weight.detach().clone()
    fusion.reset_parameters()
    assert not torch.equal(before, fusion.weight)


def test_initial_fusion_is_near_the_plain_average():
    x = torch.rand(50, 3, 3)
    for kind in ('linear', 'polynomial'):
        fusion = LEGOFusion(3, 2, kind=kind)
        out = fusion(x)[:, 0]
        ref = x.mean(dim=(1, 2)) if kind == 'linear' else \
            x.mean(dim=2).prod(dim=1)
        assert torch.allclose(out, ref, rtol=0.35)
    geometric = LEGOFusion(3, 2, kind='geometric')(x)[:, 0]
    # Order 1's exponents start near 1 / M, the others near 0.
    mean = x[:, :, 1].log().mean(dim=1).exp()
    assert torch.allclose(geometric, mean, rtol=0.5)
    assert (geometric / mean).log().abs().mean() < 0.25


def test_geometric_fusion_is_a_product_of_powers():
    fusion = LEGOFusion(2, 1, out_channels=2, kind='geometric').double()
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([[[0.0, 1.0], [0.0, 1.0]],
                                          [[0.0, 2.0], [0.0, 0.0]]]))
    x = torch.tensor([[[1.0, 0.5], [1.0, 0.4]],
                      [[0.0, 0.95], [0.0, 0.0]],
                      [[0.0, -0.3], [0.0, 0.8]]], dtype=torch.float64)
    out = fusion(x)
    eps = 1e-6
    want = torch.tensor([[(0.5 + eps) * (0.4 + eps), (0.5 + eps)**2],
                         [(0.95 + eps) * eps, (0.95 + eps)**2],
                         # A negative score counts as 0.
                         [eps * (0.8 + eps), eps**2]], dtype=torch.float64)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=0)
    # Agreement: an edge that only one view scores high weighs less than
    # one both score moderately (the linear mean ranks them the other way).
    assert out[1, 0] < out[0, 0]
    assert x[1, :, 1].mean() > x[0, :, 1].mean()
    assert (out > 0).all()
    leaf = x.clone().clamp_min(0.1).requires_grad_()
    assert torch.autograd.gradcheck(fusion, (leaf, ))
    assert fusion.coefficients().title == 'view \\ order'


def test_coefficient_tables():
    lin = LEGOFusion(2, 1, kind='linear', view_names=['rgb', 'flow'])
    table = lin.coefficients()
    assert table.rows == ['rgb', 'flow'] and table.cols == ['p=0', 'p=1']
    assert table.to_dict()['flow']['p=1'] == pytest.approx(
        float(lin.weight[0, 1, 1]))
    assert table.to_markdown().splitlines()[0] == \
        '| view \\ order | p=0 | p=1 |'
    full = LEGOFusion(2, 1, view_names=['rgb', 'flow']).coefficients()
    assert full.rows == ['rgb p=0', 'rgb p=1']
    assert full.cols == ['flow q=0', 'flow q=1']
    cp = LEGOFusion(3, 1, rank=2, view_names=['a', 'b', 'c']).coefficients()
    assert cp.values.shape == (6, 2) and cp.rows[3] == 'r1 a'
    with pytest.raises(IndexError, match='channel 1 out of range'):
        lin.coefficients(1)


def test_plot_coefficients(tmp_path):
    pytest.importorskip('matplotlib')
    path = plot_coefficients(LEGO(['a', 'b'], P=2).coefficients(),
                             str(tmp_path / 'sub' / 'coef.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('mode', ['elementwise', 'masked'])
def test_sparse_tensor_input(data, mode):
    conv = GraphPowerConv(3, mode=mode)
    ref = conv(data.edge_index, data.edge_attr)
    n = data.num_nodes
    # All views at once as a hybrid COO tensor [N, N, M] ...
    adj = torch.sparse_coo_tensor(data.edge_index, data.edge_attr, (n, n, 3))
    assert torch.allclose(conv(adj), ref)
    # ... or one view as a CSR matrix [N, N].
    csr = torch.sparse_coo_tensor(data.edge_index, data.edge_attr[:, 1],
                                  (n, n)).to_sparse_csr()
    assert torch.allclose(conv(csr), ref[:, 1:2])
    with pytest.raises(ValueError, match='either as the values'):
        conv(adj, data.edge_attr)


def test_unsorted_and_duplicate_edges_are_coalesced(data):
    conv = GraphPowerConv(3, mode='masked')
    ref = conv(data.edge_index, data.edge_attr)
    perm = torch.randperm(data.num_edges)
    out = conv(data.edge_index[:, perm], data.edge_attr[perm])
    assert torch.allclose(out, ref[perm])
    # An edge listed twice with half its score each is the same edge.
    ei = torch.cat([data.edge_index, data.edge_index[:, :5]], dim=1)
    attr = torch.cat([data.edge_attr, data.edge_attr[:5]])
    attr[:5] /= 2
    attr[-5:] /= 2
    out = conv(ei, attr)
    assert torch.allclose(out[:data.num_edges], ref)
    assert torch.allclose(out[-5:], ref[:5])


def test_cached_path_index(data):
    conv = GraphPowerConv(3, mode='masked', cached=True, kernel='torch')
    out = conv(data.edge_index, data.edge_attr)
    assert torch.equal(conv._cached_paths,
                       two_hop_paths(data.edge_index, data.num_nodes))
    assert torch.allclose(conv(data.edge_index, data.edge_attr), out)
    conv.reset_parameters()
    assert conv._cached_paths is None


def test_two_hop_paths_chunked_equals_whole(data):
    from pyg_lego.nn import masked_numba, path_index
    whole = two_hop_paths(data.edge_index, data.num_nodes)
    for chunk_size in (7, 1 << 22):
        assert torch.equal(whole, path_index._torch_paths(
            data.edge_index, data.num_nodes, chunk_size, None))
    if masked_numba.available():  # the compiled walks: the same order too
        assert torch.equal(whole, path_index._numba_paths(
            data.edge_index, data.num_nodes, None))
    row, col = data.edge_index
    e1, e2, out = whole
    assert torch.equal(row[e1], row[out]) and torch.equal(col[e2], col[out])
    assert torch.equal(col[e1], row[e2])


@pytest.mark.parametrize('conv', [None, GraphConv])
def test_propagation_head(data, conv):
    model = LEGO(data.view_names, P=2, out_channels=2).double()
    fused = model.fuse(data)
    kwargs = {} if conv is None else {'conv': conv}
    head = PropagationHead(5, 8, 3, channels=2, **kwargs).double()
    out = head(data.x_v0, data.edge_index, fused)
    assert out.shape == (16, 3)
    out.sum().backward()
    assert model.fusion.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='fused has 1 channels'):
        head(data.x_v0, data.edge_index, fused[:, :1])


def test_dense_blocks_equal_path_message_passing():
    from torch_geometric.loader import DataLoader
    from pyg_lego.nn.graph_power import complete_block_size
    graphs = [build_relation_graph(random_views(6, [4, 3], seed=s), k=5)
              for s in range(4)]
    batch = next(iter(DataLoader(graphs, batch_size=4)))
    assert complete_block_size(batch.edge_index, batch.num_nodes) == 6
    attr = batch.edge_attr.clone().requires_grad_()
    fast = GraphPowerConv(4, dense_blocks=True)(batch.edge_index, attr)
    fast.pow(2).sum().backward()
    grad_fast, attr.grad = attr.grad, None
    slow = GraphPowerConv(4, dense_blocks=False)(batch.edge_index, attr)
    slow.pow(2).sum().backward()
    assert torch.allclose(fast, slow, atol=1e-12)
    assert torch.allclose(grad_fast, attr.grad, atol=1e-12)
    # Graphs of different sizes, kNN graphs and graphs without self-loops
    # take the path message passing.
    mixed = next(iter(DataLoader(
        graphs[:2] + [build_relation_graph(random_views(5, [4, 3]), k=4)],
        batch_size=3)))
    assert complete_block_size(mixed.edge_index, mixed.num_nodes) is None
    knn = build_relation_graph(random_views(12, [4, 3]), k=3)
    assert complete_block_size(knn.edge_index, knn.num_nodes) is None
    loopless = build_relation_graph(random_views(6, [4, 3]), k=5,
                                    self_loops=False)
    assert complete_block_size(loopless.edge_index, 6) is None


def test_lego_memory_budget_streams_the_masked_power(data):
    data = data.clone()
    data.edge_attr = data.edge_attr.double()
    stored = LEGO(data.view_names, P=3, mode='masked').double()
    streamed = LEGO(data.view_names, P=3, mode='masked',
                    memory_budget=0).double()
    streamed.load_state_dict(stored.state_dict())
    assert streamed.expansion.memory_budget == 0
    assert torch.allclose(stored.fuse(data), streamed.fuse(data), atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('mode,kw', [('elementwise', {}), ('masked', {}),
                                     ('masked', {'memory_budget': 0}),
                                     ('propagated', {})])
def test_half_precision_runs_every_mode(dtype, mode, kw):
    low = {n: v.to(dtype) for n, v in random_views(60, [5, 3]).items()}
    data = build_relation_graph(low, k=6)
    assert data.edge_attr.dtype == dtype
    # Against float32 on the same features and edges (the kNN itself may
    # pick other neighbours among near ties in half precision).
    views = {n: v.float() for n, v in low.items()}
    ref_attr = relation_scores(views, data.edge_index)
    ref_model = LEGO(data.view_names, P=3, mode=mode, **kw)
    ref = ref_model(data.edge_index, ref_attr, xs=list(views.values()))
    model = LEGO(data.view_names, P=3, mode=mode, **kw).to(dtype)
    model.load_state_dict(ref_model.state_dict())
    attr = data.edge_attr.clone().requires_grad_(True)
    out = model(data.edge_index, attr, xs=list(low.values()))
    out.sum().backward()
    assert out.dtype == attr.grad.dtype == dtype
    # Within two units of the dtype's rounding (seen: up to one).
    tol = 2 * torch.finfo(dtype).eps
    assert torch.allclose(data.edge_attr.float(), ref_attr, atol=tol)
    assert torch.allclose(out.float(), ref, rtol=tol, atol=tol)
    assert bool(torch.isfinite(attr.grad).all())


def test_graph_space_head_norm():
    from pyg_lego.nn import GraphSpaceHead
    head = GraphSpaceHead(6, channels=2)
    assert repr(head) == ('GraphSpaceHead(num_nodes=6, channels=2, '
                          'hidden_channels=6, norm=True, readout=\'rows\')')
    graph = build_relation_graph(random_views(6, [3, 3]), k=5)
    fused = LEGO(['v0', 'v1'], out_channels=2).double().fuse(graph).float()
    # Fused weights in a narrow band reach the first layer standardised.
    seen = {}
    head.lin1.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    head(fused, graph.edge_index)
    assert torch.allclose(seen['x'].mean(0), torch.zeros(12), atol=1e-5)
    plain = GraphSpaceHead(6, channels=2, norm=False)
    plain.lin1.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    plain(fused, graph.edge_index)
    assert seen['x'].mean(0).abs().min() > 0.01
    with pytest.raises(ValueError, match='batch norm needs at least 2 nodes'):
        head(torch.rand(1, 2), torch.zeros(2, 1, dtype=torch.long))


def _complete_batch(sizes, channels, seed=0):
    gen = torch.Generator().manual_seed(seed)
    edges, batch, start = [], [], 0
    for b, n in enumerate(sizes):
        idx = torch.arange(start, start + n)
        edges.append(torch.cartesian_prod(idx, idx).t())
        batch.append(torch.full((n,), b))
        start += n
    edge_index = torch.cat(edges, 1)
    fused = torch.rand(edge_index.size(1), channels, generator=gen,
                       dtype=torch.float64)
    return fused, edge_index, torch.cat(batch)


def test_deviation_readout_equals_loops():
    from pyg_lego.nn.heads import graph_space_rows
    N, sizes = 5, [5, 3, 4]
    fused, edge_index, batch = _complete_batch(sizes, channels=2)
    out = graph_space_rows(fused, edge_index, batch, N, 'deviation')
    assert out.shape == (sum(sizes), N * 2)
    # Dense oracle: one graph at a time, written out entry by entry.
    row = 0
    for b, n in enumerate(sizes):
        nodes = (batch == b).nonzero().view(-1)
        G = torch.zeros(n, n, 2, dtype=torch.float64)
        for e in range(edge_index.size(1)):
            i, j = edge_index[:, e].tolist()
            if batch[i] == b:
                G[i - int(nodes[0]), j - int(nodes[0])] = fused[e]
        for i in range(n):
            for c in range(2):
                dev = [abs(G[i, j, c] - sum(G[k, j, c] for k in range(n)
                                            if k != j) / (n - 1))
                       for j in range(n) if j != i]
                want = sorted(dev, reverse=True) + [0.0] * (N - n + 1)
                got = out[row].view(N, 2)[:, c]
                assert torch.allclose(got, torch.tensor(want,
                                                        dtype=got.dtype))
            row += 1
    rows = graph_space_rows(fused, edge_index, batch, N, 'rows')
    assert torch.equal(rows.view(-1, N, 2)[:5],
                       fused[:25].view(5, 5, 2))


def test_deviation_readout_permutation_and_grad():
    from pyg_lego.nn.heads import graph_space_rows
    fused, edge_index, batch = _complete_batch([4, 4], channels=1, seed=1)
    out = graph_space_rows(fused, edge_index, batch, 4, 'deviation')
    # Relabelling the nodes of a graph moves its nodes' readouts with them.
    perm = torch.tensor([2, 0, 3, 1, 4, 5, 6, 7])
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(8)
    moved = graph_space_rows(fused, inverse[edge_index], batch, 4,
                             'deviation')
    assert torch.allclose(moved[inverse], out)
    # A node whose relations match the rest's has zero deviation.
    flat = torch.ones(16, 1, dtype=torch.float64)
    zero = graph_space_rows(flat, edge_index[:, :16], batch[:4], 4,
                            'deviation')
    assert torch.equal(zero, torch.zeros(4, 4, dtype=torch.float64))
    leaf = fused.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w: graph_space_rows(w, edge_index, batch, 4, 'deviation'),
        (leaf,))
    with pytest.raises(ValueError, match='readout must be one of'):
        graph_space_rows(fused, edge_index, batch, 4, 'sorted')
    with pytest.raises(ValueError, match='head was built for at most 3'):
        graph_space_rows(fused, edge_index, batch, 3, 'deviation')
    from pyg_lego.nn import GraphSpaceHead
    with pytest.raises(ValueError, match='readout must be one of'):
        GraphSpaceHead(4, readout='sorted')
    head = GraphSpaceHead(4, readout='deviation').double().eval()
    assert head(fused, edge_index, batch).shape == (8,)


@pytest.mark.parametrize('num_views', [1, 3, 4])
def test_chunked_cp_fusion_equals_einsum(monkeypatch, num_views):
    from pyg_lego.nn import fusion
    gen = torch.Generator().manual_seed(num_views)
    x = torch.randn(300, num_views, 4, generator=gen, dtype=torch.float64)
    x[5, 0] = 0.0  # a zero factor: the backward must not divide by it
    fuse = LEGOFusion(num_views, 3, out_channels=2, kind='polynomial',
                      rank=3).double()
    weight = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    results = []
    for limit in (10**9, 50):  # unchunked, then chunks of 50 // (2*3*M) edges
        monkeypatch.setattr(fusion, 'CP_CHUNK_ELEMENTS', limit)
        monkeypatch.setattr(fusion, 'CP_CHUNK', limit)
        leaf = x.clone().requires_grad_()
        fuse.zero_grad()
        out = fuse(leaf)
        (out * weight).sum().backward()
        results.append((out.detach(), leaf.grad, fuse.weight.grad.clone()))
    # The reference: the factors as one einsum, differentiated by autograd.
    leaf, w = x.clone().requires_grad_(), fuse.weight.detach().clone()
    w.requires_grad_()
    out = torch.einsum('emp,crmp->ecrm', leaf, w).prod(-1).sum(-1)
    (out * weight).sum().backward()
    results.append((out.detach(), leaf.grad, w.grad))
    for a, b, c in zip(*results):
        assert torch.allclose(a, c, atol=1e-12)
        assert torch.allclose(b, c, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda v: fuse(v), (x[:20].clone().requires_grad_(),))
