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
    _, data = graph(n=600)  # above the 256 nodes that are not split
    ei, n = data.edge_index, data.num_nodes
    relabel = Relabel(ei, n)
    assert relabel.edge_perm.dtype == torch.int32  # 32-bit maps: they fit
    order, perm = relabel.order.long(), relabel.edge_perm.long()
    assert torch.equal(torch.sort(order).values, torch.arange(n))
    assert not torch.equal(order, torch.arange(n))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n)
    # Position p of the relabelled pattern is input edge edge_perm[p].
    assert torch.equal(relabel.edge_index, rank[ei[:, perm]])
    assert torch.equal(perm[relabel.edge_rank.long()],
                       torch.arange(data.num_edges))
    key = relabel.edge_index[0] * n + relabel.edge_index[1]
    assert bool((key[1:] > key[:-1]).all())  # coalesced
    given = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Relabel(ei, n, given).order.long(), given)
    # Neighbours lie closer in the new numbering than in the input's.
    span = (ei[0] - ei[1]).abs().float().median()
    new_span = (relabel.edge_index[0] - relabel.edge_index[1]).abs()
    assert new_span.float().median() < 0.75 * span


def cliques(num: int, size: int, seed: int = 0):
    r"""A disjoint union of :obj:`num` complete graphs (self-loops
    included) of :obj:`size` nodes, numbered at random, coalesced, with the
    clique of every node."""
    clique = torch.arange(num).repeat_interleave(size)
    label = torch.randperm(num * size,
                           generator=torch.Generator().manual_seed(seed))
    members = label.view(num, size)
    row = members.unsqueeze(-1).expand(num, size, size).reshape(-1)
    col = members.unsqueeze(1).expand(num, size, size).reshape(-1)
    ei = torch.stack([row, col])
    ei = ei[:, torch.argsort(row * num * size + col)]
    return ei, clique[torch.argsort(label)]


def test_locality_order_numbers_each_community_in_one_run():
    ei, clique = cliques(16, 64)
    state = torch.get_rng_state()
    order = locality.locality_order(ei, 1024, leaf_size=64)
    assert torch.equal(torch.get_rng_state(), state)  # no global draws
    assert torch.equal(torch.sort(order).values, torch.arange(1024))
    # After one round a clique's nodes share their values, so every median
    # split falls between cliques: each leaf is one clique.
    assert torch.equal(clique[order].view(16, 64),
                       clique[order].view(16, 64)[:, :1].expand(16, 64))
    assert clique[order].unique().numel() == 16
    assert torch.equal(order, locality.locality_order(ei, 1024, leaf_size=64))
    assert not torch.equal(
        order, locality.locality_order(ei, 1024, leaf_size=64, seed=1))


@pytest.mark.parametrize('num_nodes', [0, 1, 300])
def test_locality_order_of_a_graph_without_edges(num_nodes):
    ei = torch.empty(2, 0, dtype=torch.long)
    order = locality.locality_order(ei, num_nodes)
    assert torch.equal(torch.sort(order).values, torch.arange(num_nodes))


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


# Budget 0: the views are recomputed in the backward pass (checkpointed),
# relabelled inside the checkpoint.
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
    monkeypatch.setattr(locality, 'LEAF_SIZE', 8)
    conv, out, attr_grad, x_grads = propagated(data, views, cached, budget)
    assert calls
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
