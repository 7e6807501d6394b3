import pytest
import torch

from pyg_lego import build_relation_graph
from pyg_lego.multiview.snf import full_normalize, local_kernel, snf


def dense_snf(affinities, mask, k, rounds):
    r"""SNF on dense N x N matrices, from the paper's equations, each
    cross-diffusion masked to the pattern."""
    def normalize(w):
        w = w * mask
        off = w.sum(1) - w.diagonal()
        p = w / (2 * off[:, None])
        p.fill_diagonal_(0.5)
        return p * mask

    def kernel(w):
        s = torch.zeros_like(w)
        for i in range(len(w)):
            row = torch.where(mask[i] > 0, w[i], torch.full_like(w[i], -1.0))
            top = torch.argsort(row, descending=True, stable=True)[:k]
            s[i, top] = w[i, top]
        return s / s.sum(1, keepdim=True)

    p = [normalize(w) for w in affinities]
    s = [kernel(w * mask) for w in affinities]
    for _ in range(rounds):
        total = sum(p)
        new = []
        for m in range(len(p)):
            q = (total - p[m]) / (len(p) - 1)
            d = (s[m] @ q @ s[m].T) * mask
            new.append(normalize((d + d.T) / 2))
        p = new
    return sum(p) / len(p)


def _affinities(n, m, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(m, n, n, generator=gen, dtype=torch.float64)
    w = (x + x.transpose(1, 2)) / 2
    for i in range(m):
        w[i].fill_diagonal_(1.0)
    return w


@pytest.mark.parametrize('pattern', ['complete', 'sparse'])
@pytest.mark.parametrize('num_views', [2, 3])
def test_snf_matches_dense_reference(pattern, num_views):
    n, k = 12, 4
    w = _affinities(n, num_views)
    if pattern == 'complete':
        mask = torch.ones(n, n, dtype=torch.float64)
    else:
        gen = torch.Generator().manual_seed(1)
        mask = (torch.rand(n, n, generator=gen) < 0.4).double()
        mask = ((mask + mask.T + torch.eye(n)) > 0).double()
    edge_index = mask.nonzero().t()
    attr = torch.stack([w[m][edge_index[0], edge_index[1]]
                        for m in range(num_views)], dim=1)
    out = snf(edge_index, attr, n, k=k, rounds=5)
    ref = dense_snf(list(w), mask, k, 5)[edge_index[0], edge_index[1]]
    torch.testing.assert_close(out, ref)


def test_snf_keeps_disconnected_blocks_apart():
    # Two views that both see two blocks with no affinity between them:
    # diffusion cannot create any.
    n = 10
    block = torch.zeros(n, n, dtype=torch.float64)
    block[:5, :5] = block[5:, 5:] = 1.0
    edge_index = torch.ones(n, n).nonzero().t()
    w = _affinities(n, 2) * block
    attr = torch.stack([w[m][edge_index[0], edge_index[1]] for m in (0, 1)],
                       dim=1)
    out = snf(edge_index, attr, n, k=3, rounds=10)
    across = block[edge_index[0], edge_index[1]] == 0
    assert (out[across] == 0).all() and (out[~across] > 0).all()


def test_full_normalize_and_local_kernel():
    edge_index = torch.tensor([[0, 0, 0, 1, 1, 2, 2], [0, 1, 2, 0, 1, 0, 2]])
    w = torch.tensor([1.0, 3.0, 1.0, 3.0, 1.0, 1.0, 1.0])
    p = full_normalize(w, edge_index, 3)
    torch.testing.assert_close(p, torch.tensor([0.5, 0.375, 0.125, 0.5, 0.5,
                                                0.5, 0.5]))
    s = local_kernel(w, edge_index, 3, k=2)
    # Row 0 keeps its two largest (3 on (0, 1), then the tie: (0, 0) first).
    torch.testing.assert_close(s, torch.tensor([0.25, 0.75, 0.0, 0.75, 0.25,
                                                0.5, 0.5]))


def test_snf_on_relation_graph_and_errors():
    torch.manual_seed(0)
    views = {'a': torch.randn(30, 4), 'b': torch.randn(30, 6)}
    rel = build_relation_graph(views, k=5, score_map='snf')
    out = snf(rel.edge_index, rel.edge_attr, rel.num_nodes, k=5)
    assert out.shape == (rel.num_edges, ) and (out >= 0).all()
    # One view: its normalised affinities, no diffusion.
    single = snf(rel.edge_index, rel.edge_attr[:, :1], rel.num_nodes)
    torch.testing.assert_close(single, full_normalize(
        rel.edge_attr[:, 0], rel.edge_index, rel.num_nodes))
    with pytest.raises(ValueError, match='affinity must have shape'):
        snf(rel.edge_index, rel.edge_attr[:-1], rel.num_nodes)
    with pytest.raises(ValueError, match='symmetric pattern'):
        snf(torch.tensor([[0, 0], [0, 1]]), torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match='k >= 1'):
        snf(rel.edge_index, rel.edge_attr, rel.num_nodes, k=0)
