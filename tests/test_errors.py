r"""Bad input gets a clear error that names the view and the problem, raised
before any computation."""
import pytest
import torch

from pyg_lego import LEGO, GivenGraph, build_relation_graph
from pyg_lego.data import exact_knn, knn_pattern, knn_search, relation_scores
from pyg_lego.nn import GraphPowerConv, LEGOFusion


def views(**overrides):
    gen = torch.Generator().manual_seed(0)
    v = {'rgb': torch.randn(10, 4, generator=gen),
         'flow': torch.randn(10, 3, generator=gen)}
    v.update(overrides)
    return v


def bad_value(value, row=2, col=1):
    x = torch.randn(10, 3)
    x[row, col] = value
    return x


@pytest.mark.parametrize('entry', [build_relation_graph, knn_pattern])
@pytest.mark.parametrize('given,match', [
    (views(flow=torch.randn(9, 3)),
     r"view 'flow' has 9 rows but view 'rgb' has 10"),
    (views(flow=bad_value(float('nan'))),
     r"view 'flow' contains nan at row 2, column 1"),
    (views(flow=bad_value(float('inf'), 4, 0)),
     r"view 'flow' contains inf at row 4, column 0"),
    (views(flow=torch.ones(10, 3, dtype=torch.long)),
     r"view 'flow' has dtype torch.int64: features must be floating point"),
    (views(flow=bad_value(0.0, 5, slice(None))),
     r"view 'flow' has 1 row\(s\) with zero norm \(first: row 5\)"),
    ({}, r"views is empty"),
    (views(flow=torch.randn(10)), r"view 'flow' must have shape \[N, d\]"),
    (views(flow=[[1.0]]), r"view 'flow' must be a torch.Tensor"),
    (views(cites=GivenGraph(torch.tensor([[0, 1], [2, 40]]))),
     r"given graph 'cites': edge_index has node index 40 out of range for "
     r"10 nodes"),
    (views(cites=GivenGraph(torch.tensor([[0, -1], [2, 3]]))),
     r"given graph 'cites': edge_index has node index -1 out of range"),
    (views(cites=GivenGraph(torch.tensor([[0, 1], [2, 3]]),
                            torch.tensor([1.0, -2.0]))),
     r"given graph 'cites' has negative weights"),
    (views(cites=GivenGraph(torch.tensor([[0, 1], [2, 3]]),
                            torch.tensor([1.0]))),
     r"given graph 'cites' needs edge_weight of shape \[2\]"),
    (views(cites=GivenGraph(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))),
     r"given graph 'cites': edge_index has dtype torch.float32"),
])
def test_bad_views(entry, given, match):
    with pytest.raises((ValueError, TypeError), match=match):
        entry(given, k=3)


@pytest.mark.parametrize('k,match', [(0, r'k must be a positive integer'),
                                     (-2, r'k must be a positive integer'),
                                     (2.5, r'k must be a positive integer'),
                                     (True, r'k must be a positive integer')])
def test_bad_k(k, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build_relation_graph(views(), k=k)


def test_views_on_different_devices():
    # A meta tensor stands in for a GPU one: no value of it is ever read,
    # so this also shows that the device check comes before any computation.
    meta = torch.randn(10, 3, device='meta')
    with pytest.raises(ValueError, match=r"view 'flow' is on meta but view "
                       r"'rgb' is on cpu: move all views to one device"):
        build_relation_graph(views(flow=meta), k=3)


def test_bad_options():
    with pytest.raises(ValueError, match=r'similarity must be one of'):
        build_relation_graph(views(), similarity='euclid')
    with pytest.raises(ValueError, match=r'score_map must be one of'):
        build_relation_graph(views(), score_map='sigmoid')
    with pytest.raises(ValueError, match=r"zero_rows must be 'error' or"):
        build_relation_graph(views(), zero_rows='ignore')
    with pytest.raises(ValueError, match=r'all views are given graphs'):
        build_relation_graph({'g': GivenGraph(torch.tensor([[0], [1]]))})
    with pytest.raises(ValueError, match=r'mode must be one of'):
        GraphPowerConv(2, mode='spectral')
    with pytest.raises(ValueError, match=r'P \(the highest order\)'):
        GraphPowerConv(-1)
    with pytest.raises(ValueError, match=r'kind must be one of'):
        LEGOFusion(2, 2, kind='attention')
    with pytest.raises(ValueError, match=r'rank must be >= 1'):
        LEGOFusion(3, 2, rank=0)


def test_zero_rows_drop_removes_the_nodes():
    flow = torch.randn(10, 3)
    flow[[2, 7]] = 0.0
    cites = GivenGraph(torch.tensor([[0, 2, 3], [1, 9, 7]]))
    data = build_relation_graph(views(flow=flow, cites=cites), k=3,
                                zero_rows='drop')
    assert data.num_nodes == 8
    assert data.n_id.tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
    assert torch.equal(data.x_flow, flow[data.n_id])
    # Only the cites edge 0-1 survives; its score is 1 there.
    score = data.edge_attr[(data.edge_index[0] == 0) &
                           (data.edge_index[1] == 1), 2]
    assert score.tolist() == [1.0]


def test_expansion_input_errors():
    data = build_relation_graph(views(), k=3)
    conv = GraphPowerConv(2, mode='propagated')
    with pytest.raises(ValueError, match=r'needs the features of all 2 views'):
        conv(data.edge_index, data.edge_attr)
    with pytest.raises(ValueError, match=r'view 1 is a given graph without'):
        conv(data.edge_index, data.edge_attr, xs=[data.x_rgb, None])
    with pytest.raises(ValueError, match=r'edge_attr must have shape'):
        conv(data.edge_index, data.edge_attr[:-1], xs=[data.x_rgb,
                                                       data.x_flow])
    extra = torch.cat([data.edge_index, torch.tensor([[10], [10]])], 1)
    with pytest.raises(ValueError,
                       match=r'edge_index has node index 10 out of range'):
        GraphPowerConv(2)(extra, torch.cat([data.edge_attr,
                                            data.edge_attr[:1]]), num_nodes=10)
    with pytest.raises(ValueError, match=r'expected input \[\|E\|, 2, 3\]'):
        LEGOFusion(2, 2)(torch.rand(5, 3, 3))


def test_lego_view_mismatch():
    data = build_relation_graph(views(), k=3)
    with pytest.raises(ValueError, match=r"the graph has views \['rgb', "
                       r"'flow'\] but the model was built for"):
        LEGO(['flow', 'rgb']).fuse(data)
    with pytest.raises(ValueError, match=r'edge_attr has 2 score columns but '
                       r'the model has 3 views'):
        LEGO(['a', 'b', 'c'])(data.edge_index, data.edge_attr)
    with pytest.raises(ValueError, match=r"scored with similarity='cosine'"):
        LEGO(['rgb', 'flow'], mode='propagated', similarity='dot').fuse(data)


def test_relation_scores_validates_too():
    data = build_relation_graph(views(), k=3)
    with pytest.raises(ValueError, match=r"view 'flow' contains nan"):
        relation_scores(views(flow=bad_value(float('nan'))), data.edge_index)


@pytest.mark.parametrize('search', [exact_knn, knn_search])
@pytest.mark.parametrize('x,k,match', [
    (torch.randn(10), 3, r"view 'x' must have shape \[N, d\], got \[10\]"),
    (torch.ones(10, 3, dtype=torch.long), 3,
     r"view 'x' has dtype torch.int64: features must be floating point"),
    (torch.randn(10, 3), 2.5, r'k must be a positive integer'),
    (torch.randn(10, 3), 10, r'1 <= k <= N - 1 = 9, got k=10'),
])
def test_knn_searches_check_their_input(search, x, k, match):
    with pytest.raises((ValueError, TypeError), match=match):
        search(x, k)


@pytest.mark.parametrize('names', [2, 'rgb', ['rgb', 3], None])
def test_lego_view_names_must_be_names(names):
    with pytest.raises(TypeError, match=r'view_names must be a list of view '
                       r'names \(str\)'):
        LEGO(names)


def test_lego_needs_a_view():
    with pytest.raises(ValueError, match=r'view_names must be a non-empty'):
        LEGO([])


def test_checked_graph_is_not_read_again_but_a_changed_one_is(monkeypatch):
    # build_relation_graph reads what the forward checks once; a forward
    # over the same unchanged tensors reads none of their values again, and
    # an in-place change to them is checked again.
    from pyg_lego.data import validation
    data = build_relation_graph(views(), k=3)
    conv = GraphPowerConv(2)
    expected = conv(data.edge_index, data.edge_attr)
    calls = []
    monkeypatch.setattr(torch, 'aminmax', lambda *a, **k: calls.append(1))
    monkeypatch.setattr(torch, 'isfinite', lambda *a, **k: calls.append(1))
    assert torch.equal(conv(data.edge_index, data.edge_attr), expected)
    assert calls == []
    monkeypatch.undo()
    edge_index, edge_attr = data.edge_index.clone(), data.edge_attr.clone()
    assert torch.equal(conv(edge_index, edge_attr), expected)
    assert validation.edge_facts(edge_index) == (0, 9, True)
    edge_index[1, -1] = 10
    with pytest.raises(ValueError,
                       match=r'edge_index has node index 10 out of range'):
        conv(edge_index, edge_attr, num_nodes=10)
    edge_index[1, -1] = 9
    edge_attr[0, 0] = float('nan')
    with pytest.raises(ValueError, match=r'contains NaN or Inf'):
        conv(edge_index, edge_attr)
