r"""Invariance properties of the relation graph, the expansion and the fusion,
over random sizes, views, k, P, modes and fusion kinds (hypothesis).

Every property is checked in float64, so that tolerances can be tight and a
failure means a real difference, not rounding.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_geometric.loader import DataLoader

from pyg_lego import LEGO, build_relation_graph
from pyg_lego.data import relation_scores
from pyg_lego.nn import GraphPowerConv, two_hop_paths

from .conftest import random_views

MODES = ('elementwise', 'masked', 'propagated')
FUSIONS = (('linear', None), ('polynomial', None), ('polynomial', 2),
           ('geometric', None))
TOL = dict(atol=1e-9, rtol=1e-9)
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw, max_nodes=16, max_views=3):
    n = draw(st.integers(4, max_nodes))
    m = draw(st.integers(1, max_views))
    return dict(n=n, m=m, widths=[draw(st.integers(2, 5)) for _ in range(m)],
                k=draw(st.integers(1, n - 1)), P=draw(st.integers(0, 3)),
                mode=draw(st.sampled_from(MODES)),
                fusion=draw(st.sampled_from(FUSIONS)),
                self_loops=draw(st.booleans()),
                seed=draw(st.integers(0, 2**20)))


def _graph_and_model(c, views=None):
    views = views or random_views(c['n'], c['widths'], seed=c['seed'])
    data = build_relation_graph(views, k=c['k'], self_loops=c['self_loops'])
    kind, rank = c['fusion']
    torch.manual_seed(c['seed'])
    model = LEGO(data.view_names, P=c['P'], mode=c['mode'], fusion=kind,
                 rank=rank, out_channels=2).double()
    return views, data, model


def _lookup(edge_index, num_nodes, query):
    r"""Position of every edge of :obj:`query` in the coalesced
    :obj:`edge_index` (asserts that all are present)."""
    key = edge_index[0] * num_nodes + edge_index[1]
    want = query[0] * num_nodes + query[1]
    pos = torch.searchsorted(key, want).clamp_max(key.numel() - 1)
    assert bool((key[pos] == want).all()), 'edge sets differ'
    return pos


@PROPERTY
@given(c=cases())
def test_relabelling_nodes_relabels_the_output(c):
    views, data, model = _graph_and_model(c)
    gen = torch.Generator().manual_seed(c['seed'])
    perm = torch.randperm(c['n'], generator=gen)  # new node i = old perm[i]
    pviews = {name: x[perm] for name, x in views.items()}
    pdata = build_relation_graph(pviews, k=c['k'], self_loops=c['self_loops'])
    assert pdata.num_edges == data.num_edges
    # Same edges under the relabelling, and nothing else.
    pos = _lookup(data.edge_index, c['n'], perm[pdata.edge_index])
    assert torch.allclose(pdata.edge_attr, data.edge_attr[pos], **TOL)
    assert torch.allclose(model.fuse(pdata), model.fuse(data)[pos], **TOL)


def _permute_fusion_weight(model, order):
    fusion = model.fusion
    w = fusion.weight.data
    if fusion.kind in ('linear', 'geometric'):
        return w[:, order]
    if fusion.full:  # A[p, q] for (view 0, view 1): swapping views transposes
        return w.transpose(1, 2) if order == [1, 0] else w
    return w[:, :, order]


@PROPERTY
@given(c=cases(), data=st.data())
def test_view_order_changes_only_the_coefficient_order(c, data):
    views, graph, model = _graph_and_model(c)
    order = data.draw(st.permutations(range(c['m'])))
    names = list(views)
    pviews = {names[i]: views[names[i]] for i in order}
    pgraph = build_relation_graph(pviews, k=c['k'],
                                  self_loops=c['self_loops'])
    assert torch.equal(pgraph.edge_index, graph.edge_index)
    assert torch.allclose(pgraph.edge_attr, graph.edge_attr[:, order], **TOL)
    kind, rank = c['fusion']
    pmodel = LEGO(pgraph.view_names, P=c['P'], mode=c['mode'], fusion=kind,
                  rank=rank, out_channels=2).double()
    pmodel.fusion.weight.data.copy_(_permute_fusion_weight(model, order))
    assert torch.allclose(pmodel.fuse(pgraph), model.fuse(graph), **TOL)
    if c['m'] > 1 and kind in ('linear', 'geometric'):
        table, ptable = model.coefficients(), pmodel.coefficients()
        assert ptable.rows == [names[i] for i in order]
        assert torch.equal(ptable.values, table.values[order])


@PROPERTY
@given(c=cases(max_nodes=12), sizes=st.lists(st.integers(4, 12), min_size=2,
                                             max_size=4),
       with_paths=st.booleans())
def test_batch_equals_graphs_one_by_one(c, sizes, with_paths):
    graphs = []
    for i, n in enumerate(sizes):
        views = random_views(n, c['widths'], seed=c['seed'] + i)
        g = build_relation_graph(views, k=min(c['k'], n - 1),
                                 self_loops=c['self_loops'])
        if with_paths:
            g.path_index = two_hop_paths(g.edge_index, g.num_nodes)
        graphs.append(g)
    _, _, model = _graph_and_model(c)
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    one_by_one = torch.cat([model.fuse(g) for g in graphs])
    assert torch.allclose(model.fuse(batch), one_by_one, **TOL)


@PROPERTY
@given(c=cases(), data=st.data())
def test_unsorted_and_duplicated_edges_equal_coalesced(c, data):
    views, graph, model = _graph_and_model(c)
    ei, ea = graph.edge_index, graph.edge_attr
    xs = list(views.values())
    gen = torch.Generator().manual_seed(c['seed'])
    # Shuffle, then split some edges into two copies whose scores sum to the
    # original: coalescing (summing duplicates) must restore the graph.
    order = torch.randperm(ei.size(1), generator=gen)
    dup = order[:data.draw(st.integers(0, ei.size(1)))]
    share = torch.rand(dup.numel(), 1, generator=gen, dtype=ea.dtype)
    ids = torch.cat([order, dup])
    attr = torch.cat([ea[order], ea[dup] * share])
    attr[order.argsort()[dup]] *= 1 - share  # the first copy keeps the rest
    messy = ei[:, ids]
    conv = GraphPowerConv(c['P'], mode=c['mode'])
    ref = conv(ei, ea, xs=xs)
    paths = two_hop_paths(ei, c['n'])
    # A path index of the coalesced graph does not describe unsorted input;
    # the layer must rebuild it rather than trust it.
    out = conv(messy, attr, xs=xs, num_nodes=c['n'], path_index=paths)
    assert torch.allclose(out, ref[ids], **TOL)
    fused = model(messy, attr, xs=xs, num_nodes=c['n'])
    assert torch.allclose(fused, model(ei, ea, xs=xs)[ids], **TOL)


@pytest.mark.parametrize('kind,rank', FUSIONS)
@pytest.mark.parametrize('mode', MODES)
@settings(max_examples=3, deadline=None)
@given(c=cases(max_nodes=7, max_views=2))
def test_gradcheck_features_and_coefficients(mode, kind, rank, c):
    views, data, model = _graph_and_model({**c, 'mode': mode,
                                           'fusion': (kind, rank)})
    names, ei = list(views), data.edge_index
    leaves = [views[n].clone().requires_grad_() for n in names]

    def through_features(*xs):
        scores = relation_scores(dict(zip(names, xs)), ei)
        return model(ei, scores, xs=list(xs))

    assert torch.autograd.gradcheck(through_features, tuple(leaves))
    scores = data.edge_attr
    xs = list(views.values())

    def through_coefficients(weight):
        return torch.func.functional_call(
            model, {'fusion.weight': weight}, (ei, scores),
            {'xs': xs})

    weight = model.fusion.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(through_coefficients, (weight,))
