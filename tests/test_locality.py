r"""The locality relabelling and the propagated mode on a relabelled
pattern."""
import pytest
import torch

from pyg_lego import dense
from pyg_lego.nn import GraphPowerConv, locality
from pyg_lego.nn.locality import Relabel

from .conftest import dense_at
from .test_scale import graph


def test_relabel_is_a_renumbering_of_the_same_pattern():
    _, data = graph(n=80)
    ei, n = data.edge_index, data.num_nodes
    relabel = Relabel(ei, n)
    assert relabel.edge_perm.dtype == torch.int32  # 32-bit maps: they fit
    order, perm = relabel.order.long(), relabel.edge_perm.long()
    assert torch.equal(torch.sort(order).values, torch.arange(n))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n)
    # Position p of the relabelled pattern is input edge edge_perm[p].
    assert torch.equal(relabel.edge_index, rank[ei[:, perm]])
    assert torch.equal(perm[relabel.edge_rank.long()],
                       torch.arange(data.num_edges))
    key = relabel.edge_index[0] * n + relabel.edge_index[1]
    assert bool((key[1:] > key[:-1]).all())  # coalesced
    # Reverse Cuthill-McKee narrows the band of a randomly numbered graph.
    band = (ei[0] - ei[1]).abs().max()
    assert (relabel.edge_index[0] - relabel.edge_index[1]).abs().max() < band


def propagated(data, views, cached=False, budget=None):
    names = list(views)
    xs = [views[name].clone().requires_grad_(True) for name in names]
    attr = data.edge_attr.detach().clone().requires_grad_(True)
    conv = GraphPowerConv(3, mode='propagated', cached=cached,
                          memory_budget=budget)
    out = conv(data.edge_index, attr, xs=xs, num_nodes=data.num_nodes)
    weight = torch.randn(out.shape, dtype=out.dtype,
                         generator=torch.Generator().manual_seed(1))
    (out * weight).sum().backward()
    return conv, out.detach(), attr.grad, [x.grad for x in xs]


# Budget 0: the views are recomputed in the backward pass (checkpointed);
# then one call does not relabel (the copies would take what the budget
# saves), and a cached relabelling still serves.
@pytest.mark.parametrize('cached,budget', [(False, None), (True, None),
                                           (True, 0), (False, 0)])
def test_propagated_relabelled_equals_as_given(monkeypatch, cached, budget):
    views, data = graph(n=120)
    calls = []
    real = locality.Relabel.__init__
    monkeypatch.setattr(locality.Relabel, '__init__',
                        lambda *a: calls.append(1) or real(*a))
    ref = propagated(data, views)
    assert not calls  # too small to relabel
    monkeypatch.setattr(locality, 'RELABEL_MIN_EDGES', 0)
    monkeypatch.setattr(locality, 'RELABEL_MIN_FEATURE_BYTES', 0)
    conv, out, attr_grad, x_grads = propagated(data, views, cached, budget)
    assert bool(calls) == (cached or budget is None)
    assert torch.allclose(out, ref[1], atol=1e-12)
    assert torch.allclose(attr_grad, ref[2], atol=1e-12)
    for grad, expected in zip(x_grads, ref[3]):
        assert torch.allclose(grad, expected, atol=1e-12)
    # Against the dense oracle too.
    mask, r = dense.relation_graph(views, k=6)
    expected = dense_at(dense.graph_powers(r, mask, 3, 'propagated',
                                           xs=list(views.values())),
                        data.edge_index)
    assert torch.allclose(out, expected, atol=1e-10)
    if cached:
        kept = conv._cached_relabel
        assert kept is not None
        conv(data.edge_index, data.edge_attr, xs=list(views.values()),
             num_nodes=data.num_nodes)
        assert conv._cached_relabel is kept and len(calls) == 1
        conv.reset_parameters()
        assert conv._cached_relabel is None


def test_propagated_relabels_one_call_only_for_large_features(monkeypatch):
    views, data = graph(n=120)
    monkeypatch.setattr(locality, 'RELABEL_MIN_EDGES', 0)
    calls = []
    real = locality.Relabel.__init__
    monkeypatch.setattr(locality.Relabel, '__init__',
                        lambda *a: calls.append(1) or real(*a))
    conv = GraphPowerConv(3, mode='propagated')
    widest = max(x.numel() * x.element_size() for x in views.values())
    for threshold, relabelled in ((widest + 1, False), (widest, True)):
        monkeypatch.setattr(locality, 'RELABEL_MIN_FEATURE_BYTES', threshold)
        conv(data.edge_index, data.edge_attr, xs=list(views.values()),
             num_nodes=data.num_nodes)
        assert bool(calls) == relabelled
