r"""Sparse equals dense: every expansion mode and fusion kind against
:mod:`pyg_lego.dense`, forward and gradients, on kNN and complete patterns."""
import random

import pytest
import torch

from pyg_lego import LEGO, build_relation_graph, dense
from pyg_lego.data import GivenGraph, relation_scores
from pyg_lego.nn import GraphPowerConv, LEGOFusion
from pyg_lego.nn.graph_power import DEFAULT_PATH_BUDGET
from pyg_lego.nn.lego import DEFAULT_TOPK

from .conftest import dense_at, random_views, requires_cuda

# 'masked' runs the default kernel (numba where installed), 'masked:torch'
# the torch one.
MODES = ['elementwise', 'masked', 'masked:torch', 'propagated']
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5),
       torch.float64: dict(atol=1e-10, rtol=1e-10)}


def _cases(count, seed):
    rng = random.Random(seed)
    for _ in range(count):
        n = rng.randint(3, 60)
        yield dict(n=n, m=rng.randint(1, 4), P=rng.randint(0, 4),
                   k=rng.randint(1, n - 1), self_loops=rng.random() < 0.7,
                   seed=rng.randint(0, 10**6))


def _check_pattern(data, views, k, self_loops):
    mask, r = dense.relation_graph(views, k, self_loops=self_loops)
    ei = data.edge_index
    assert int(mask.sum()) == ei.size(1)
    assert bool(mask[ei[0], ei[1]].all())
    return mask, r


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('case', list(_cases(6, seed=7)),
                         ids=lambda c: 'n{n}-m{m}-P{P}-k{k}-sl{self_loops}'
                         .format(**c))
def test_expansion_matches_dense(case, mode, dtype):
    mode, _, kernel = mode.partition(':')
    widths = [3 + 2 * i for i in range(case['m'])]
    views = random_views(case['n'], widths, dtype, case['seed'])
    data = build_relation_graph(views, k=case['k'],
                                self_loops=case['self_loops'])
    mask, r = _check_pattern(data, views, case['k'], case['self_loops'])
    assert torch.allclose(data.edge_attr, dense_at(r, data.edge_index),
                          **TOL[dtype])
    conv = GraphPowerConv(case['P'], mode=mode, kernel=kernel or 'auto')
    out = conv(data.edge_index, data.edge_attr, xs=list(views.values()))
    assert out.shape == (data.num_edges, case['m'], case['P'] + 1)
    ref = dense.graph_powers(r, mask, case['P'], mode,
                             xs=list(views.values()))
    assert torch.allclose(out, dense_at(ref, data.edge_index), **TOL[dtype])


@pytest.mark.parametrize('kind,rank', [('linear', None),
                                       ('polynomial', None),
                                       ('polynomial', 2),
                                       ('geometric', None)])
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case', list(_cases(4, seed=11)),
                         ids=lambda c: 'n{n}-m{m}-P{P}-k{k}-sl{self_loops}'
                         .format(**c))
def test_lego_forward_and_gradients_match_dense(case, mode, kind, rank,
                                                dtype):
    _lego_against_dense(case, mode, kind, rank, dtype, 'cpu')



@pytest.mark.parametrize('mode', ['elementwise', 'masked', 'propagated'])
@pytest.mark.parametrize('case,topk', [
    (dict(n=40, m=3, P=2, k=6, self_loops=True, seed=4), 4),
    (dict(n=30, m=2, P=3, k=29, self_loops=True, seed=5), None)],  # complete
    ids=['knn-topk4', 'complete-default'])
def test_lego_default_sparsifies_like_dense(case, topk, mode):
    # LEGO's default top-k (or a smaller one) against the dense fused graph
    # sparsified by dense.topk, forward and gradients (float64: no near-ties
    # between the k-th and the next weight).
    views = random_views(case['n'], [4 + i for i in range(case['m'])],
                         torch.float64, case['seed'])
    names = list(views)
    data = build_relation_graph(views, k=case['k'])
    kw = {} if topk is None else {'topk': topk}
    model = LEGO(names, P=case['P'], mode=mode, out_channels=2,
                 **kw).double()
    assert model.topk == (topk or DEFAULT_TOPK)
    leaves = {n: v.clone().requires_grad_() for n, v in views.items()}
    out = model(data.edge_index, relation_scores(leaves, data.edge_index),
                xs=list(leaves.values()))
    weights = torch.randn(out.shape, dtype=torch.float64)
    (out * weights).sum().backward()
    grads = [leaves[n].grad for n in names] + [model.fusion.weight.grad]
    model.zero_grad()
    dleaves = {n: v.clone().requires_grad_() for n, v in views.items()}
    mask, r = dense.relation_graph(dleaves, case['k'])
    g = dense.fuse(dense.graph_powers(r, mask, case['P'], mode,
                                      xs=list(dleaves.values())),
                   model.fusion, mask)
    g = dense.topk(g, mask, model.topk)
    ei = data.edge_index
    ref = g[:, ei[0], ei[1]].t()
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    assert bool((out == 0).any()), "the case must drop edges"
    (ref * weights).sum().backward()
    dgrads = [dleaves[n].grad for n in names] + [model.fusion.weight.grad]
    for a, b in zip(grads, dgrads):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@requires_cuda
@pytest.mark.parametrize('mode', ['elementwise', 'masked',
                                  'masked:streamed', 'propagated'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case', [
    dict(n=40, m=2, P=3, k=6, self_loops=True, seed=1),
    dict(n=25, m=3, P=2, k=24, self_loops=False, seed=2),  # complete
    dict(n=60, m=1, P=4, k=3, self_loops=True, seed=3)],
    ids=lambda c: 'n{n}-m{m}-P{P}-k{k}-sl{self_loops}'.format(**c))
def test_cuda_matches_dense(case, mode, dtype):
    # The whole pipeline on the GPU: graph build, scores, expansion (the
    # masked power by its stored index, or streamed), fusion, gradients.
    _lego_against_dense(case, mode, 'polynomial', None, dtype, 'cuda')


def _lego_against_dense(case, mode, kind, rank, dtype, device):
    mode, _, variant = mode.partition(':')
    kernel = variant if variant in ('torch', 'numba') else 'auto'
    widths = [4 + i for i in range(case['m'])]
    views = random_views(case['n'], widths, dtype, case['seed'])
    names = list(views)
    on_device = {n: v.to(device) for n, v in views.items()}
    data = build_relation_graph(on_device, k=case['k'],
                                self_loops=case['self_loops'])
    assert data.edge_index.device.type == device
    mask, _ = _check_pattern(data.to('cpu'), views, case['k'],
                             case['self_loops'])

    # The expansion and fusion here; the sparsification in
    # test_lego_default_sparsifies_like_dense.
    model = LEGO(names, P=case['P'], mode=mode, fusion=kind, rank=rank,
                 out_channels=2, kernel=kernel, topk=None,
                 memory_budget=0 if variant == 'streamed' else
                 DEFAULT_PATH_BUDGET).to(dtype)
    ref_weight = model.fusion.weight.detach().clone()
    model = model.to(device)
    leaves = {n: v.clone().requires_grad_() for n, v in on_device.items()}
    edge_attr = relation_scores(leaves, data.edge_index)
    out = model(data.edge_index, edge_attr, xs=list(leaves.values()))
    assert out.device.type == device
    weights = torch.randn(out.shape, dtype=dtype)
    (out * weights.to(device)).sum().backward()
    grads = [leaves[n].grad for n in names] + [model.fusion.weight.grad]

    model = model.cpu()
    assert torch.equal(model.fusion.weight, ref_weight)
    model.zero_grad()
    ei = data.edge_index.cpu()
    dleaves = {n: v.clone().requires_grad_() for n, v in views.items()}
    _, r = dense.relation_graph(dleaves, case['k'],
                                self_loops=case['self_loops'])
    powers = dense.graph_powers(r, mask, case['P'], mode,
                                xs=list(dleaves.values()))
    g = dense.fuse(powers, model.fusion, mask)  # [C, N, N]
    ref = g[:, ei[0], ei[1]].t()
    tol = TOL[dtype]
    if kind == 'geometric' and dtype == torch.float32:
        # Its exponent sums logarithms down to log(1e-6) = -13.8, whose
        # float32 rounding the exp and the weight gradient scale up.
        tol = dict(atol=1e-4, rtol=1e-4)
    assert torch.allclose(out.cpu(), ref, **tol)
    assert bool((g * ~mask).eq(0).all())
    (ref * weights).sum().backward()
    dgrads = [dleaves[n].grad for n in names] + [model.fusion.weight.grad]
    for leaf, a, b in zip(list(dleaves.values()) + [model.fusion.weight],
                          grads, dgrads):
        # No gradient at all when the output does not depend on the leaf
        # (e.g. P = 0 without self-loops): both sides must agree on that too.
        a = torch.zeros_like(leaf) if a is None else a.cpu()
        b = torch.zeros_like(leaf) if b is None else b
        assert torch.allclose(a, b, **tol)


@pytest.mark.parametrize('similarity', ['cosine', 'dot', 'rbf'])
@pytest.mark.parametrize('score_map', ['auto', 'affine', 'clamp', 'raw'])
def test_similarities_and_score_maps_match_dense(similarity, score_map):
    views = random_views(25, [6, 4], seed=3)
    data = build_relation_graph(views, k=4, similarity=similarity,
                                score_map=score_map)
    mask, r = dense.relation_graph(views, 4, similarity, score_map)
    assert int(mask.sum()) == data.num_edges
    assert torch.allclose(data.edge_attr, dense_at(r, data.edge_index),
                          atol=1e-10)
    if score_map in ('auto', 'affine', 'clamp') or similarity == 'rbf':
        conv = GraphPowerConv(3, mode='propagated', similarity=similarity,
                              score_map=score_map)
        out = conv(data.edge_index, data.edge_attr, xs=list(views.values()))
        ref = dense.graph_powers(r, mask, 3, 'propagated',
                                 xs=list(views.values()),
                                 similarity=similarity, score_map=score_map)
        assert torch.allclose(out, dense_at(ref, data.edge_index),
                              atol=1e-10)


@pytest.mark.parametrize('kw', [{}, {'dense_blocks': False},
                                {'dense_blocks': False, 'kernel': 'torch'}],
                         ids=['dense-blocks', 'default-kernel', 'torch'])
@pytest.mark.parametrize('n', [3, 9, 17])
def test_masked_power_on_complete_graph_is_matrix_power(n, kw):
    views = random_views(n, [5, 3], seed=n)
    data = build_relation_graph(views, k=n - 1)
    assert data.num_edges == n * n
    P = 4
    out = GraphPowerConv(P, mode='masked', **kw)(data.edge_index,
                                                 data.edge_attr)
    mask, r = dense.relation_graph(views, n - 1)
    for m in range(2):
        a = dense.normalize(r[m], mask)
        for p in range(P + 1):
            ref = torch.linalg.matrix_power(a, p)
            assert torch.allclose(out[:, m, p],
                                  dense_at(ref, data.edge_index), atol=1e-12)


def test_k_at_least_n_is_complete():
    views = random_views(7, [3])
    for k in (6, 7, 100):
        assert build_relation_graph(views, k=k).num_edges == 49
    assert build_relation_graph(views, k=6, self_loops=False).num_edges == 42


def test_elementwise_order0_all():
    views = random_views(12, [4, 4])
    data = build_relation_graph(views, k=3)
    mask, r = dense.relation_graph(views, 3)
    out = GraphPowerConv(2, mode='elementwise', order0='all')(
        data.edge_index, data.edge_attr)
    ref = dense.graph_powers(r, mask, 2, 'elementwise', order0='all')
    assert torch.allclose(out, dense_at(ref, data.edge_index))
    assert bool((out[..., 0] == 1).all())


def test_given_graph_view_matches_dense():
    views = random_views(15, [5], seed=4)
    gen = torch.Generator().manual_seed(1)
    ei = torch.randint(0, 15, (2, 30), generator=gen)
    w = torch.rand(30, generator=gen, dtype=torch.float64)
    views['cites'] = GivenGraph(ei, w, self_loop_weight=0.5)
    data = build_relation_graph(views, k=2)
    mask, r = dense.relation_graph(views, 2)
    assert int(mask.sum()) == data.num_edges
    assert torch.allclose(data.edge_attr, dense_at(r, data.edge_index))
    for mode in ('elementwise', 'masked'):
        out = GraphPowerConv(3, mode=mode)(data.edge_index, data.edge_attr)
        ref = dense.graph_powers(r, mask, 3, mode)
        assert torch.allclose(out, dense_at(ref, data.edge_index))


def test_full_polynomial_is_spanned_by_cp_rank_p_plus_1():
    # With two views, CP of rank P + 1 can represent any full matrix A:
    # A = U V^T, factor r of view 1 = U[:, r], of view 2 = V[:, r].
    P = 2
    full = LEGOFusion(2, P).double()
    cp = LEGOFusion(2, P, rank=P + 1).double()
    a = full.weight.data[0]
    u, s, vh = torch.linalg.svd(a)
    with torch.no_grad():
        cp.weight[0, :, 0] = (u * s).t()
        cp.weight[0, :, 1] = vh
    x = torch.rand(40, 2, P + 1, dtype=torch.float64)
    assert torch.allclose(full(x), cp(x), atol=1e-12)
