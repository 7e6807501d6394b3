r"""Top-k sparsification of a fused graph against a dense per-row top-k,
forward and gradients, on kNN and complete patterns."""
import pytest
import torch

from pyg_lego import build_relation_graph, dense
from pyg_lego.nn import TopKSparsify, drop_zero_edges, topk_mask
from pyg_lego.nn.sparsify import reverse_edges

from .conftest import random_views


def _dense_topk(edge_index, w, k, n):
    r"""The oracle: an N x N matrix of weights (-inf off the pattern), each
    row's k largest off-diagonal entries (ties: the earlier edge), made
    symmetric, plus the diagonal."""
    order = torch.full((n, n), -1, dtype=torch.long)
    order[edge_index[0], edge_index[1]] = torch.arange(edge_index.size(1))
    chosen = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        cand = [(float(w[e]), -int(e), j) for j in range(n)
                if j != i and (e := order[i, j]) >= 0]
        for _, _, j in sorted(cand, reverse=True)[:k]:
            chosen[i, j] = True
    keep = chosen | chosen.T | torch.eye(n, dtype=torch.bool)
    return keep[edge_index[0], edge_index[1]]


def _graph(n, k, seed):
    views = random_views(n, (4, 3), seed=seed)
    return build_relation_graph(views, k=k).edge_index


@pytest.mark.parametrize('n,k_graph,k', [(20, 4, 2), (20, 4, 6), (9, 8, 3),
                                         (12, 11, 1), (7, 6, 10)])
def test_topk_equals_dense(n, k_graph, k):
    ei = _graph(n, k_graph, seed=n + k)
    gen = torch.Generator().manual_seed(k)
    # Rounded weights produce ties, which go to the earlier edge.
    w = (torch.rand(ei.size(1), generator=gen, dtype=torch.float64) * 4
         ).round()
    mask = topk_mask(ei, w, k, n)
    assert torch.equal(mask, _dense_topk(ei, w, k, n))
    # pyg_lego.dense's matrix form, the oracle of LEGO's default.
    g = torch.zeros(n, n, dtype=torch.float64)
    g[ei[0], ei[1]] = w + 1  # no zero weights: kept means non-zero
    pattern = torch.zeros(n, n, dtype=torch.bool)
    pattern[ei[0], ei[1]] = True
    assert torch.equal(dense.topk(g, pattern, k)[ei[0], ei[1]] != 0, mask)
    # Symmetric, self-loops kept, at least min(k, degree) per node.
    rev = reverse_edges(ei, n)
    assert torch.equal(mask, mask[rev])
    assert mask[ei[0] == ei[1]].all()
    off = mask & (ei[0] != ei[1])
    deg = torch.bincount(ei[0][ei[0] != ei[1]], minlength=n)
    kept = torch.bincount(ei[0][off], minlength=n)
    assert (kept >= deg.clamp_max(k)).all()


def test_topk_channels_select_their_own_edges():
    n = 15
    ei = _graph(n, 4, seed=1)
    w = torch.rand(ei.size(1), 3, dtype=torch.float64)
    mask = topk_mask(ei, w, 2, n)
    assert mask.shape == w.shape
    for c in range(3):
        assert torch.equal(mask[:, c], _dense_topk(ei, w[:, c], 2, n))


def test_sparsify_forward_and_gradients():
    n = 18
    ei = _graph(n, 5, seed=2)
    w = torch.rand(ei.size(1), dtype=torch.float64, requires_grad=True)
    layer = TopKSparsify(3)
    assert str(layer) == 'TopKSparsify(k=3)'
    out = layer(ei, w, n)
    keep = _dense_topk(ei, w.detach(), 3, n)
    torch.testing.assert_close(out, w.detach() * keep)
    g = torch.randn(ei.size(1), dtype=torch.float64)
    (out * g).sum().backward()
    # Gradients flow to the kept weights and to no dropped one.
    torch.testing.assert_close(w.grad, g * keep)
    torch.testing.assert_close(
        torch.autograd.grad((layer(ei, w, n) * g).sum(), w)[0], g * keep)


def test_drop_zero_edges():
    ei = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]])
    w = torch.tensor([1.0, 0.0, 0.5, 2.0])
    ei2, w2 = drop_zero_edges(ei, w)
    assert ei2.tolist() == [[0, 1, 1], [0, 0, 1]]
    assert w2.tolist() == [1.0, 0.5, 2.0]
    ei3, w3 = drop_zero_edges(ei, torch.tensor([[0.0, 1.0], [0.0, 0.0],
                                                 [0.0, 0.0], [1.0, 0.0]]))
    assert ei3.tolist() == [[0, 1], [0, 1]]


def test_sparsify_compiles():
    n = 12
    ei = _graph(n, 4, seed=3)
    w = torch.rand(ei.size(1))
    layer = TopKSparsify(2)
    compiled = torch.compile(layer, dynamic=False)
    torch.testing.assert_close(compiled(ei, w, n), layer(ei, w, n))


def test_sparsify_errors():
    ei = _graph(10, 3, seed=4)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match='positive int'):
            TopKSparsify(bad)
    with pytest.raises(ValueError, match='edge_weight must have shape'):
        TopKSparsify(2)(ei, torch.rand(ei.size(1) + 1))
    with pytest.raises(ValueError, match='edge_weight must have shape'):
        TopKSparsify(2)(ei, torch.rand(ei.size(1), 2, 2))


@pytest.mark.parametrize('n,k_graph,k', [(20, 4, 2), (12, 11, 3)])
def test_topk_paths_agree(n, k_graph, k, monkeypatch):
    # The padded per-row sort (rows in order), the two global sorts (rows
    # out of order, or a table too sparse) and the dense oracle agree, ties
    # included; so do both ways of finding the reverse edges.
    from pyg_lego.nn import sparsify
    ei = _graph(n, k_graph, seed=3)
    w = (torch.rand(ei.size(1), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64) * 3).round()
    padded = topk_mask(ei, w, k, n)
    assert torch.equal(padded, _dense_topk(ei, w, k, n))
    monkeypatch.setattr(sparsify, 'PADDED_MAX_FILL', 0)
    assert torch.equal(topk_mask(ei, w, k, n), padded)
    monkeypatch.undo()
    perm = torch.randperm(ei.size(1), generator=torch.Generator()
                          .manual_seed(1))
    # Ties go to the earlier edge, which the shuffle changes: compare on
    # tie-free weights.
    w2 = torch.rand(ei.size(1), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    assert torch.equal(topk_mask(ei[:, perm], w2[perm], k, n),
                       topk_mask(ei, w2, k, n)[perm])
    rev = reverse_edges(ei, n)
    rev_shuffled = reverse_edges(ei[:, perm], n)
    assert torch.equal(ei[:, rev].flip(0), ei)
    assert torch.equal(ei[:, perm][:, rev_shuffled].flip(0), ei[:, perm])


def test_reverse_edges_of_a_directed_pattern():
    ei = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, 2, 0]])
    assert reverse_edges(ei, 3).tolist() == [0, -1, 2, -1, -1]


def test_duplicate_edges_count_once():
    # Copies of an edge (as in an uncoalesced input) are one edge of their
    # largest weight: the mask equals the coalesced graph's, copy by copy.
    n = 14
    ei = _graph(n, 6, seed=4)
    gen = torch.Generator().manual_seed(5)
    w = torch.rand(ei.size(1), generator=gen, dtype=torch.float64)
    dup = torch.randperm(ei.size(1), generator=gen)[:ei.size(1) // 2]
    ids = torch.cat([torch.arange(ei.size(1)), dup])
    order = torch.randperm(ids.numel(), generator=gen)
    ids = ids[order]
    copies = w[ids].clone()
    copies[order.argsort()[ei.size(1):]] *= 0.5  # lighter second copies
    expect = topk_mask(ei, w, 3, n)[ids]
    assert torch.equal(topk_mask(ei[:, ids], copies, 3, n), expect)
    out = TopKSparsify(3)(ei[:, ids], torch.stack([copies, copies], -1), n)
    assert torch.equal(out[:, 1] != 0, expect)
