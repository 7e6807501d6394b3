r"""The partitioned relation graph (:mod:`pyg_lego.distributed`): scores,
graph powers and fused weights of each rank's rows, and their gradients,
equal the single process's on 2 and 4 gloo processes with uneven blocks;
bad input raises the same error on every rank."""

import pytest
import torch
import torch.distributed as dist

from pyg_lego import LEGO
from pyg_lego.data import knn_pattern, relation_scores
from pyg_lego.distributed import (PartitionedLEGO, partitioned_graph_powers,
                                  partitioned_pattern,
                                  partitioned_relation_scores)
from pyg_lego.nn import GraphPowerConv, masked_numba

from .conftest import forked_worlds, raised_errors

# Uneven blocks, one smaller than k: N = 80 on a subgroup of 2 ranks, 150
# on all 4 (one spawn of 4 processes runs both: each start costs an import).
SIZES = {2: [23, 57], 4: [41, 4, 93, 12]}
K = 6
P = 3
#: (similarity, score map, gamma) of the scores, each with a gradient.
SCORES = [('cosine', 'auto', None), ('dot', 'clamp', None),
          ('rbf', 'raw', 0.5), ('rbf', 'auto', None),
          ('cosine', 'local', None), ('cosine', 'snf', None)]
#: (kind, out_channels, mode) of the fusions.
FUSIONS = [('linear', 2, 'masked'), ('polynomial', 1, 'masked'),
           ('polynomial', 2, 'propagated'), ('geometric', 2, 'elementwise')]
# Tight: the same products on the same rows, summed in another order only in
# gradients that collect contributions from several ranks.
TOL = dict(rtol=1e-12, atol=1e-13)


def views(world):
    gen = torch.Generator().manual_seed(world)
    n = sum(SIZES[world])
    return {'a': torch.randn(n, 5, generator=gen, dtype=torch.float64),
            'b': torch.randn(n, 3, generator=gen, dtype=torch.float64)}


def reference_fusion(kind, channels, mode):
    torch.manual_seed(len(kind) + channels)
    return LEGO(['a', 'b'], P, mode, fusion=kind, out_channels=channels,
                topk=None).double()


def loss_weights(edge_index, width):
    r"""Weights of a loss that depends on every entry differently, a
    function of the edge (so that each rank weights its edges as the
    single process does)."""
    key = (edge_index[0] * 1000 + edge_index[1]).double()
    return torch.sin(key.unsqueeze(1) * torch.arange(1, width + 1))


def run(world, rank, group):
    sizes = SIZES[world]
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    n = hi - lo
    local = {v: x[lo:hi].clone().requires_grad_()
             for v, x in views(world).items()}
    ei = partitioned_pattern({v: x.detach() for v, x in local.items()}, K,
                             group=group)
    out = {'edge_index': ei}
    for sim, smap, gamma in SCORES:
        s, stats = partitioned_relation_scores(local, ei, sim, smap, gamma,
                                               K, group=group)
        (s * loss_weights(ei, 2)).sum().backward()
        out['scores', sim, smap] = s.detach()
        out['stats', sim, smap] = stats
        out['grad', sim, smap] = {v: x.grad for v, x in local.items()}
        for x in local.values():
            x.grad = None
    score = out['scores', 'cosine', 'auto']
    for p in (0, 1, P):
        attr = score.clone().requires_grad_()
        pw, stats = partitioned_graph_powers(ei, attr, n, p, group=group)
        if p > 0:  # order 0 is the identity, which has no gradient
            (pw * loss_weights(ei, 2 * (p + 1)).view_as(pw)).sum() \
                .backward()
        out['masked', p] = pw.detach(), attr.grad
        out['stats', 'masked', p] = stats
    attr = score.clone().requires_grad_()
    feats = [x.detach().clone().requires_grad_() for x in local.values()]
    pw, stats = partitioned_graph_powers(ei, attr, n, 2, 'propagated',
                                         xs=feats, group=group)
    (pw * loss_weights(ei, 6).view_as(pw)).sum().backward()
    out['propagated'] = pw.detach(), attr.grad, [x.grad for x in feats]
    out['stats', 'propagated'] = stats
    out['elementwise'] = partitioned_graph_powers(
        ei, score, n, 2, 'elementwise', 'all', group=group)
    xs = [x.detach() for x in local.values()]
    for kind, channels, mode in FUSIONS:
        model = PartitionedLEGO(['a', 'b'], P, mode, fusion=kind,
                                out_channels=channels, cached=True,
                                group=group).double()
        model.load_state_dict(
            reference_fusion(kind, channels, mode).state_dict())
        runs = []
        for _ in range(2):  # the second call reuses the cached plan
            model.zero_grad()
            fused, stats = model(ei, score, n, xs)
            (fused * loss_weights(ei, channels)).sum().backward()
            reduced = model.reduce_gradients()
            runs.append((fused.detach(), model.fusion.weight.grad.clone(),
                         stats, reduced))
        out['fused', kind, channels, mode] = runs
    out['errors'] = errors(world, rank, group, local, ei, score, n)
    return out


def errors(world, rank, group, local, ei, score, n):
    x = {v: t.detach() for v, t in local.items()}
    last = rank == world - 1
    calls = {
        'names': lambda: partitioned_relation_scores(
            {('b' if rank else 'a'): x['a'], 'c': x['b']}, ei, group=group),
        'width': lambda: partitioned_relation_scores(
            {'a': x['a'][:, :4 + (rank == 0)], 'b': x['b']}, ei,
            group=group),
        'options': lambda: partitioned_relation_scores(
            x, ei, 'dot' if last else 'cosine', group=group),
        'zero': lambda: partitioned_relation_scores(
            {'a': x['a'] * (0 if last else 1), 'b': x['b']}, ei,
            group=group),
        'rows': lambda: partitioned_relation_scores(
            x, ei + (1 if last else 0), group=group),
        'order': lambda: partitioned_relation_scores(
            x, ei.flip(1) if rank == 0 else ei, group=group),
        'grad': lambda: partitioned_relation_scores(
            local if rank == 0 else x, ei, group=group),
        'k': lambda: partitioned_relation_scores(
            x, ei, score_map='snf', group=group),
        'nan': lambda: partitioned_graph_powers(
            ei, score * float('nan') if last else score, n, P, group=group),
        'shape': lambda: partitioned_graph_powers(
            ei, score[1:] if rank == 0 else score, n, P, group=group),
        'num_local': lambda: partitioned_graph_powers(
            ei, score, 0 if last else n, P, group=group),
        'P': lambda: partitioned_graph_powers(ei, score, n, P + rank,
                                              group=group),
        'mode': lambda: partitioned_graph_powers(ei, score, n, P, 'spectral',
                                                 group=group),
        'xs': lambda: partitioned_graph_powers(
            ei, score, n, P, 'propagated', xs=[x['a']] if last else list(
                x.values()), group=group),
    }
    return raised_errors(calls)


def cat(got, key):
    return torch.cat([g[key] for g in got])


def check_world(world, got):
    x = views(world)
    ei = torch.cat([g['edge_index'] for g in got], 1)
    assert torch.equal(ei, knn_pattern(x, K))
    for sim, smap, gamma in SCORES:
        leaf = {v: t.clone().requires_grad_() for v, t in x.items()}
        ref = relation_scores(leaf, ei, sim, smap, gamma, k=K)
        (ref * loss_weights(ei, 2)).sum().backward()
        assert torch.allclose(cat(got, ('scores', sim, smap)), ref, **TOL)
        for v in x:
            grad = torch.cat([g['grad', sim, smap][v] for g in got])
            assert torch.allclose(grad, leaf[v].grad, **TOL), (sim, smap, v)
    score = relation_scores(x, ei)
    for p in (0, 1, P):
        attr = score.clone().requires_grad_()
        ref = GraphPowerConv(p)(ei, attr)
        assert torch.allclose(torch.cat([g['masked', p][0] for g in got]),
                              ref, **TOL), p
        if p == 0:
            assert all(g['masked', p][1] is None for g in got)
            continue
        (ref * loss_weights(ei, 2 * (p + 1)).view_as(ref)).sum() \
            .backward()
        assert torch.allclose(torch.cat([g['masked', p][1] for g in got]),
                              attr.grad, **TOL), p
    ref = GraphPowerConv(2, 'elementwise', order0='all')(ei, score)
    assert torch.equal(torch.cat([g['elementwise'][0] for g in got]), ref)
    attr = score.clone().requires_grad_()
    leaf = [t.clone().requires_grad_() for t in x.values()]
    ref = GraphPowerConv(2, 'propagated')(ei, attr, xs=leaf)
    (ref * loss_weights(ei, 6).view_as(ref)).sum().backward()
    assert torch.allclose(torch.cat([g['propagated'][0] for g in got]), ref,
                          **TOL)
    assert torch.allclose(torch.cat([g['propagated'][1] for g in got]),
                          attr.grad, **TOL)
    for m, feat in enumerate(leaf):
        assert torch.allclose(torch.cat([g['propagated'][2][m] for g in got]),
                              feat.grad, **TOL)
    for kind, channels, mode in FUSIONS:
        lego = reference_fusion(kind, channels, mode)
        fused = lego(ei, score, xs=list(x.values()))
        (fused * loss_weights(ei, channels)).sum().backward()
        for step in range(2):
            runs = [g['fused', kind, channels, mode][step] for g in got]
            assert torch.allclose(torch.cat([r[0] for r in runs]), fused,
                                  **TOL), kind
            for r in runs:  # every rank holds the summed gradient
                assert torch.allclose(r[1], lego.fusion.weight.grad, **TOL)
                assert r[3] == 8 * lego.fusion.weight.numel()
    # Bytes sent by stage: the halo is fetched once, its gradients go back
    # once, and a cached plan sends no requests or structure again.
    for g in got:
        stats = g['stats', 'masked', P]
        assert set(stats) == {'checks', 'powers/requests', 'powers/structure',
                              'powers/degrees', 'powers/rows',
                              'powers/degrees.backward',
                              'powers/rows.backward'}
        assert all(v > 0 for v in stats.values())
        assert g['stats', 'masked', 0].keys() == {'checks'}
        assert set(g['stats', 'cosine', 'auto']) == {
            'checks', 'scores/requests', 'scores/features',
            'scores/features.backward'}
        assert set(g['stats', 'cosine', 'snf']) == {
            'checks', 'scores/requests', 'scores/features', 'scores/scales',
            'scores/features.backward', 'scores/scales.backward'}
        first, second = g['fused', 'linear', 2, 'masked'][0][2], \
            g['fused', 'linear', 2, 'masked'][1][2]
        assert set(second) == {'checks', 'powers/degrees', 'powers/rows'}
        assert all(second[k] == first[k] for k in second)
        assert set(g['stats', 'propagated']) == {
            'checks', 'powers/requests', 'powers/degrees', 'powers/features',
            'powers/degrees.backward', 'powers/features.backward'}
    # What one rank sends to another, the other receives: the features of
    # the halo (8 bytes per feature) and back the same number of gradients.
    stats = [g['stats', 'cosine', 'snf'] for g in got]
    sent = sum(s['scores/features'] for s in stats)
    assert sent == sum(s['scores/features.backward'] for s in stats) > 0
    # Per halo node, 5 + 3 features and, for 2 views, 2 scales of 8 bytes.
    assert sent % (8 * 8) == 0 and \
        sum(s['scores/scales'] for s in stats) == sent // 2
    messages = {
        'names': 'same view names in the same order',
        'width': 'same width d_m and dtype of each view',
        'options': 'same similarity, score_map, gamma and k',
        'zero': f'views on rank {world - 1} has a row with zero norm',
        'rows': f'edge_index on rank {world - 1} has rows outside',
        'order': 'edge_index on rank 0 is not coalesced',
        'grad': 'same gradient mode',
        'k': "score_map='snf' needs k",
        'nan': f'edge_attr on rank {world - 1} contains NaN or Inf',
        'shape': 'edge_attr on rank 0 must have shape [E_r, M]',
        'num_local': f'on rank {world - 1}, num_local must be a positive',
        'P': 'same P, mode, order0',
        'mode': "mode must be one of ('elementwise', 'masked', "
                "'propagated')",
        'xs': f"on rank {world - 1}, mode='propagated' needs xs",
    }
    for g in got:  # every rank raised, with the same message
        for what, message in messages.items():
            assert g['errors'][what] is not None and \
                message in g['errors'][what], (what, g['errors'][what])
    assert [g['errors'] for g in got] == [got[0]['errors']] * world


@pytest.fixture
def torch_kernels(monkeypatch):
    r"""Single-process references without numba, whose kernels and path
    search compile for 15 s (the suite holds them to the torch code)."""
    monkeypatch.setattr(masked_numba, 'available', lambda: False)


def test_partitioned_graph_equals_one_process(tmp_path, torch_kernels):
    # The workers run no numba (torch_kernels) and one thread each.
    got = forked_worlds(run, tmp_path)
    check_world(4, [g[4] for g in got])
    check_world(2, [g[2] for g in got[:2]])


def test_one_process(tmp_path, torch_kernels):
    x = views(2)
    ei = knn_pattern(x, K)
    with pytest.raises(RuntimeError, match='init_process_group'):
        partitioned_relation_scores(x, ei)
    with pytest.raises(RuntimeError, match='init_process_group'):
        partitioned_graph_powers(ei, torch.rand(ei.size(1), 2), 80, P)
    with pytest.raises(ValueError, match='mode must be one of'):
        PartitionedLEGO(['a', 'b'], mode='spectral')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/init',
                            rank=0, world_size=1)
    try:
        # One process is the single-process computation, with no halo.
        score, stats = partitioned_relation_scores(x, ei)
        assert torch.equal(score, relation_scores(x, ei))
        assert stats == {'checks': 0, 'scores/requests': 0,
                         'scores/features': 0}
        powers, stats = partitioned_graph_powers(ei, score, 80, P)
        assert torch.allclose(powers, GraphPowerConv(P)(ei, score), **TOL)
        assert set(stats.values()) == {0}
        # Half precision has no sparse kernels: gathers and scatters.
        half = {v: t.to(torch.bfloat16) for v, t in x.items()}
        score = relation_scores(half, ei)
        powers, _ = partitioned_graph_powers(
            ei, score, 80, 2, 'propagated', xs=list(half.values()))
        ref = GraphPowerConv(2, 'propagated')(ei, score,
                                              xs=list(half.values()))
        assert powers.dtype == torch.bfloat16
        assert torch.allclose(powers.float(), ref.float(), atol=1e-2)
        with pytest.raises(ValueError, match="rows outside the rank's "
                                             "nodes 0..78"):
            partitioned_graph_powers(ei, score, 79, P)
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()
