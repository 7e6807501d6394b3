import math

import numpy as np
import pytest
import torch

from pyg_lego import GivenGraph, build_relation_graph
from pyg_lego.multiview import (GNN, Context, Method, digits_views, expand,
                                label_propagation, make_split,
                                mean_normalized_adjacency, multiplex_sbm,
                                run_benchmark, summarize, to_markdown,
                                with_corrupted_views)
from pyg_lego.multiview.baselines import KINDS, Graph, given_graph, knn_graph
from pyg_lego.multiview.datasets import orientation_histograms
from pyg_lego.multiview.experiment import (fit_method, lp_alphas,
                                           sample_configs, view_shares)
from pyg_lego.multiview.lego_classifier import LEGOClassifier
from pyg_lego.multiview.suites import (report_markdown, run_suite,
                                       small_setting)

TINY = dict(lr=0.02, hidden_channels=8, dropout=0.1, weight_decay=0.0)


@pytest.fixture(scope='module')
def tiny_digits():
    return digits_views(num_nodes=80)


def test_digits_views_shapes_and_determinism():
    a, b = digits_views(), digits_views()
    assert a.view_names == ['pixels', 'hog', 'profiles']
    assert [tuple(v.shape) for v in a.views.values()] == \
        [(1797, 64), (1797, 72), (1797, 32)]
    assert a.num_classes == 10 and a.node_features().shape == (1797, 168)
    for name in a.views:
        assert torch.equal(a.views[name], b.views[name])
        col_mean = a.views[name].mean(0).abs().max()
        assert col_mean < 1e-4  # standardised columns
    # the views really differ: no view is a copy of another
    assert not torch.allclose(a.views['pixels'][:, :32],
                              a.views['profiles'])


def test_digits_subset_is_stratified(tiny_digits):
    assert tiny_digits.num_nodes == 80
    assert torch.bincount(tiny_digits.y).tolist() == [8] * 10
    with pytest.raises(ValueError, match='num_nodes'):
        digits_views(num_nodes=5)


def test_orientation_histograms_see_edge_direction():
    vertical = np.zeros((1, 8, 8))
    vertical[:, :, 4:] = 1.0  # a vertical edge: horizontal gradient
    horizontal = vertical.transpose(0, 2, 1)
    hv = orientation_histograms(vertical, bins=4, cell=8, stride=8)[0]
    hh = orientation_histograms(horizontal, bins=4, cell=8, stride=8)[0]
    assert hv.argmax() == 0  # angle 0
    assert hh.argmax() == 2  # angle pi / 2
    with pytest.raises(ValueError, match='N, H, W'):
        orientation_histograms(np.zeros((8, 8)))


def test_corrupted_views(tiny_digits):
    data = with_corrupted_views(tiny_digits, corrupt='hog', noise_dim=5)
    assert data.view_names[-2:] == ['noise', 'hog_permuted']
    assert data.views['noise'].shape == (80, 5)
    perm, orig = data.views['hog_permuted'], tiny_digits.views['hog']
    assert not torch.equal(perm, orig)
    assert torch.equal(perm.sort(0)[0], orig.sort(0)[0])  # same rows
    with pytest.raises(ValueError, match="cannot corrupt view 'depth'"):
        with_corrupted_views(tiny_digits, corrupt='depth')


def _homophily(graph: GivenGraph, y):
    row, col = graph.edge_index
    return float((y[row] == y[col]).float().mean())


def test_multiplex_sbm_edge_types():
    data = multiplex_sbm(num_nodes=400, seed=1)
    assert data.view_names == ['features', 'friends', 'random', 'rivals']
    graphs = data.graph_views
    assert _homophily(graphs['friends'], data.y) > 0.6
    assert abs(_homophily(graphs['random'], data.y) - 0.25) < 0.1
    assert _homophily(graphs['rivals'], data.y) == 0.0
    again = multiplex_sbm(num_nodes=400, seed=1)
    assert torch.equal(again.graph_views['friends'].edge_index,
                       graphs['friends'].edge_index)
    with pytest.raises(ValueError, match='outside'):
        multiplex_sbm(edge_types={'bad': (1.5, 0.0)})


def test_make_split_is_disjoint_and_complete(tiny_digits):
    y = tiny_digits.y
    s = make_split(y, per_class=2, val_per_class=3, seed=0)
    assert s.train.numel() == 20 and s.val.numel() == 30
    assert torch.bincount(y[s.train]).tolist() == [2] * 10
    allidx = torch.cat([s.train, s.val, s.test]).sort()[0]
    assert torch.equal(allidx, torch.arange(80))
    assert not torch.equal(s.train, make_split(y, 2, 3, seed=1).train)
    with pytest.raises(ValueError, match='not enough'):
        make_split(y, per_class=5, val_per_class=5, seed=0)


def test_sample_configs_same_for_every_call():
    grid = {'a': [1, 2], 'b': [3, 4], 'c': [5, 6]}
    assert sample_configs(grid, 3) == sample_configs(grid, 3)
    assert len(sample_configs(grid, 3)) == 3
    assert len(sample_configs(grid, 100)) == 8
    assert len(lp_alphas(4)) == 4 and len(set(lp_alphas(4))) == 4


def test_mean_normalized_adjacency_matches_dense():
    n = 6
    g1 = given_graph(GivenGraph(torch.tensor([[0, 1, 2], [1, 2, 3]])), n)
    g2 = given_graph(GivenGraph(torch.tensor([[3, 4, 0], [4, 5, 5]])), n)
    mean = mean_normalized_adjacency([g1, g2], n)
    dense = torch.zeros(n, n)
    for g in (g1, g2):
        a = torch.zeros(n, n)
        a[g.edge_index[0], g.edge_index[1]] = 1.0
        d = a.sum(1).rsqrt()
        dense += d[:, None] * a * d[None, :] / 2
    got = torch.zeros(n, n)
    got[mean.edge_index[0], mean.edge_index[1]] = mean.edge_weight
    assert torch.allclose(got, dense, atol=1e-6)


def test_knn_graph_symmetric_with_self_loops(tiny_digits):
    g = knn_graph(tiny_digits.views['pixels'], k=3)
    ei = g.edge_index
    pairs = set(map(tuple, ei.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    assert all((i, i) in pairs for i in range(80))


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('weighted', [False, True])
def test_every_baseline_head_runs_and_learns(kind, weighted, tiny_digits):
    x, y = tiny_digits.node_features(), tiny_digits.y
    g = knn_graph(x, 5)
    w = torch.rand(g.edge_index.size(1)) if weighted else None
    model = GNN(kind, x.size(1), 16, 10, dropout=0.0, weighted=weighted)
    assert kind in repr(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, g.edge_index, w), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match='kind must be one of'):
        GNN('gin', 4, 4, 2)


def test_label_propagation_fills_cliques():
    # two 4-cliques joined by one edge; one labelled node in each
    edges = [(i, j) for i in range(4) for j in range(4) if i != j]
    edges += [(i + 4, j + 4) for i, j in edges] + [(3, 4), (4, 3)]
    g = Graph(torch.tensor(edges).t())
    y = torch.tensor([0] * 4 + [1] * 4)
    out = label_propagation(y, torch.tensor([0, 7]), g, alpha=0.9)
    assert out.argmax(-1).tolist() == y.tolist()
    with pytest.raises(ValueError, match='alpha'):
        label_propagation(y, torch.tensor([0]), g, alpha=1.0)


@pytest.mark.parametrize('mode', ['elementwise', 'masked', 'propagated'])
@pytest.mark.parametrize('fusion', ['linear', 'polynomial'])
def test_lego_classifier_trains_fusion_end_to_end(mode, fusion, tiny_digits):
    rel = build_relation_graph(tiny_digits.views, k=5)
    powers = expand(rel, 2, mode)
    assert powers.shape == (rel.num_edges, 3, 3)
    model = LEGOClassifier(rel.view_names, powers, 'gcn',
                           tiny_digits.node_features().size(1), 8, 10,
                           fusion=fusion)
    before = model.fusion.weight.detach().clone()
    out = model(tiny_digits.node_features(), rel.edge_index)
    torch.nn.functional.cross_entropy(out, tiny_digits.y).backward()
    assert model.fusion.weight.grad.abs().sum() > 0
    assert (model.fused_graph() >= 0).all()
    assert torch.equal(before, model.fusion.weight.detach())
    with pytest.raises(ValueError, match='powers must have shape'):
        LEGOClassifier(['a'], powers, 'gcn', 4, 4, 2)


def test_view_shares_ignore_the_shared_identity():
    from pyg_lego.nn import CoefficientTable
    table = CoefficientTable(torch.tensor([[5.0, 1.0, 0.0], [-5.0, 0.0, 3.0]]),
                             ['a', 'b'], ['p=0', 'p=1', 'p=2'], '')
    assert view_shares(table, 'masked') == pytest.approx({'a': 0.25,
                                                          'b': 0.75})
    shares = view_shares(table, 'propagated')
    assert shares['a'] == pytest.approx(6 / 14)
    assert math.isclose(sum(shares.values()), 1.0)


def test_run_benchmark_tiny(tiny_digits):
    methods = [Method('MLP', 'gnn', 'mlp'),
               Method('LP best', 'lp', graph='best_view'),
               Method('GCN mean', 'gnn', 'gcn', 'mean'),
               Method('LEGO', 'lego', 'sgc', mode='masked', fusion='linear')]
    records = run_benchmark(tiny_digits, methods, label_rates=(2, ),
                            seeds=(0, 1), val_per_class=2, budget=2,
                            k=5, epochs=5, patience=5, progress=False)
    assert len(records) == 8
    assert all(0.0 <= r.test <= 1.0 for r in records)
    # the second seed reuses the configuration tuned on the first
    for name in ('MLP', 'LEGO'):
        first, second = [r for r in records if r.method == name]
        assert first.config == second.config
    lego = [r for r in records if r.method == 'LEGO']
    assert set(lego[0].shares) == {'pixels', 'hog', 'profiles'}
    assert math.isclose(sum(lego[0].shares.values()), 1.0, rel_tol=1e-5)
    assert set(first.config) == {'lr', 'hidden_channels', 'dropout',
                                 'weight_decay'}
    summary = summarize(records)
    assert set(summary) == {'MLP', 'LP best', 'GCN mean', 'LEGO'}
    md = to_markdown(summary)
    assert md.count('**') >= 2 and '2 labels/class' in md


def test_configurations_recorded_with_the_old_key(tiny_digits):
    ctx = Context(tiny_digits, k=5)
    split = make_split(tiny_digits.y, 2, 2, seed=0)
    method = Method('MLP', 'gnn', 'mlp')
    old = {'lr': 0.02, 'hidden': 8, 'dropout': 0.1, 'weight_decay': 0.0}
    fit = fit_method(method, ctx, split, old, epochs=2, patience=2)
    assert fit.config == {'lr': 0.02, 'hidden_channels': 8, 'dropout': 0.1,
                          'weight_decay': 0.0}
    assert fit.model.hidden_channels == 8
    with pytest.raises(ValueError, match=r"lacks \['dropout'\]"):
        fit_method(method, ctx, split, {'lr': 0.02, 'hidden_channels': 8,
                                        'weight_decay': 0.0})


def test_given_graph_example_runs():
    data = multiplex_sbm(num_nodes=80, seed=0)
    ctx = Context(data, k=5)
    assert ctx.relation.view_names == data.view_names
    split = make_split(data.y, 3, 3, seed=0)
    method = Method('LEGO', 'lego', 'gcn', mode='masked', fusion='linear')
    fit = fit_method(method, ctx, split, TINY, epochs=5, patience=5)
    table = fit.model.coefficients()
    assert table.rows == ['features', 'friends', 'random', 'rivals']
    # a given graph's own edges are in the pattern
    g = given_graph(data.graph_views['friends'], 80)
    key = ctx.relation.edge_index[0] * 80 + ctx.relation.edge_index[1]
    assert torch.isin(g.edge_index[0] * 80 + g.edge_index[1], key).all()
    with pytest.raises(ValueError, match="unknown view 'nope'"):
        ctx.graph('view:nope', split)


def test_suites_small(monkeypatch):
    monkeypatch.setenv('PYG_LEGO_SMALL', '1')
    assert small_setting()
    monkeypatch.setenv('PYG_LEGO_SMALL', '0')
    assert not small_setting()
    res = run_suite('given_graphs', small=True, progress=False,
                    methods=[Method('MLP', 'gnn', 'mlp'),
                             Method('LEGO', 'lego', 'gcn', fusion='linear')])
    assert res['setting'] == 'small' and len(res['records']) == 4
    md = report_markdown([res])
    assert 'given_graphs' in md and 'friends' in md
    with pytest.raises(ValueError, match='unknown suite'):
        run_suite('nope', small=True)


def test_figures():
    pytest.importorskip('matplotlib')
    from pyg_lego.multiview.figures import adjacency_figure, summary_figure
    summary = {'a': {2: (0.8, 0.01), 5: (0.9, 0.02)}, 'b': {2: (0.7, 0.0)}}
    fig = summary_figure(summary)
    ax = fig.axes[0]
    assert len(ax.patches) == 4  # 2 methods x 2 rates; the missing one is NaN
    assert [t.get_text() for t in ax.get_yticklabels()] == ['a', 'b']
    y = torch.tensor([0, 1, 0, 1])
    ei = torch.tensor([[0, 0, 1, 2], [2, 0, 3, 0]])
    fig = adjacency_figure({'g': (ei, torch.ones(4)),
                            'h': (ei, torch.full((4, ), 2.0))}, y, range(4))
    assert len(fig.axes) == 2
    img = fig.axes[0].images[0].get_array()
    # sorted by class: nodes 0, 2 (class 0) then 1, 3; self-loops hidden
    assert img[0, 1] == 1 and img[2, 3] == 1 and img[0, 0] == 0
