
r"""The partitioned exact kNN search (:mod:`pyg_lego.distributed`): 2 and 4
gloo processes on this machine, uneven blocks, find the edges of the
single-process search; ties go to the lower node id."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyg_lego.data import exact_knn, knn_pattern
from pyg_lego.data.relation import coalesce_pattern
from pyg_lego.distributed import (partition_sizes, partitioned_knn,
                                  partitioned_pattern)

from .conftest import free_port

# Uneven blocks, one smaller than k: N = 80 and 150.
SIZES = {2: [23, 57], 4: [41, 4, 93, 12]}
K = 6


def distinct(n, d, seed):
    r"""Random features: no two scores of a row tie."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64)


def tied(n, d, seed):
    r"""Features whose products are exact in any order of summation (entries
    0 or +-1/2, four of them non-zero: unit rows under cosine too), a third
    of them copies of others, so that rows have many tied neighbours."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, d, dtype=torch.float64)
    for i in range(n):
        cols = torch.randperm(d, generator=gen)[:4]
        x[i, cols] = torch.randint(0, 2, (4,), generator=gen).double() - 0.5
    dup = torch.randint(0, n, (n // 3,), generator=gen)
    x[torch.randperm(n, generator=gen)[:n // 3]] = x[dup]
    return x


def cases(world):
    n = sum(SIZES[world])
    return {
        'distinct': {'a': distinct(n, 5, world),
                     'b': distinct(n, 3, 10 + world)},
        'tied': {'a': tied(n, 8, world), 'b': tied(n, 6, 20 + world)},
    }


def worker(rank, world, init, out):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=init, rank=rank,
                            world_size=world)
    try:
        sizes = SIZES[world]
        lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
        result = {'sizes': partition_sizes(hi - lo)}
        for name, views in cases(world).items():
            local = {v: x[lo:hi] for v, x in views.items()}
            for sim in ('cosine', 'dot', 'rbf'):
                result[name, sim] = tuple(partitioned_knn(local['a'], K, sim))
                result[name, sim, 'pattern'] = partitioned_pattern(
                    local, K, sim)
        # One query row per block of scores.
        result['blocked'] = tuple(partitioned_knn(
            cases(world)['tied']['a'][lo:hi], K, memory_budget=1))
        x = cases(world)['distinct']['a'][lo:hi]
        result['complete'] = partitioned_pattern({'a': x}, sum(sizes) - 1)
        errors = {}
        for what, call in {
                'k': lambda: partitioned_knn(x, K + rank),
                'd': lambda: partitioned_knn(x[:, :4 + (rank == 1)], K),
                'dtype': lambda: partitioned_knn(
                    x.float() if rank == 0 else x, K),
                'big k': lambda: partitioned_knn(x, sum(sizes)),
                'nan': lambda: partitioned_knn(
                    x.clone().fill_(float('nan')) if rank == world - 1
                    else x, K),
                'names': lambda: partitioned_pattern(
                    {'a' if rank else 'b': x}, K)}.items():
            try:
                call()
                errors[what] = None
            except ValueError as e:
                errors[what] = str(e)
        result['errors'] = errors
        torch.save(result, os.path.join(out, f'{rank}.pt'))
    finally:
        dist.destroy_process_group()


def canonical_knn(x, k, similarity):
    r"""The reference: all scores of each row, sorted by score (largest
    first) and then by node id."""
    z = torch.nn.functional.normalize(x, dim=-1) if similarity == 'cosine' \
        else x
    s = z @ z.t()
    if similarity == 'rbf':
        s = 2 * s - (z * z).sum(-1)
    s.fill_diagonal_(float('-inf'))
    vals, cols = s.sort(dim=1, descending=True, stable=True)
    return vals[:, :k], cols[:, :k]


def canonical_pattern(views, k, similarity):
    n = next(iter(views.values())).size(0)
    parts = []
    for x in views.values():
        _, cols = canonical_knn(x, k, similarity)
        parts.append(torch.stack([torch.arange(n).repeat_interleave(k),
                                  cols.reshape(-1)]))
    ei = torch.cat(parts, 1)
    loops = torch.arange(n).expand(2, n)
    return coalesce_pattern(torch.cat([ei, ei.flip(0), loops], 1), n)


def rows_of(edge_index, lo, hi):
    keep = (edge_index[0] >= lo) & (edge_index[0] < hi)
    return edge_index[:, keep]


@pytest.mark.parametrize('world', [2, 4])
def test_partitioned_knn_finds_the_single_process_edges(tmp_path, world):
    mp.spawn(worker, args=(world, f'tcp://127.0.0.1:{free_port()}',
                           str(tmp_path)), nprocs=world)
    sizes = SIZES[world]
    n = sum(sizes)
    got = [torch.load(tmp_path / f'{r}.pt', weights_only=False)
           for r in range(world)]
    for name, views in cases(world).items():
        x = views['a']
        for sim in ('cosine', 'dot', 'rbf'):
            row = torch.cat([g[name, sim][0] for g in got])
            col = torch.cat([g[name, sim][1] for g in got])
            assert torch.equal(row, torch.arange(n).repeat_interleave(K))
            ref_vals, ref_cols = canonical_knn(x, K, sim)
            ei, score = exact_knn(x, K, sim, return_scores=True)
            pattern = torch.cat([g[name, sim, 'pattern'] for g in got], 1)
            if name == 'distinct':  # exact_knn's own edges, in its order
                assert torch.equal(ei, torch.stack([row, col])), sim
                assert torch.equal(pattern, knn_pattern(views, K, sim)), sim
            else:  # ties: to the lower id, as the sorted reference has them
                vals = canonical_knn(x, K + 1, sim)[0]
                assert bool((vals[:, K - 1] == vals[:, K]).any())  # cut ties
                assert torch.equal(col, ref_cols.reshape(-1)), sim
                assert torch.equal(pattern,
                                   canonical_pattern(views, K, sim)), sim
                # exact_knn picks other members of the same ties: its
                # neighbours are exactly as near.
                if sim != 'rbf':
                    assert torch.equal(score, ref_vals.reshape(-1))
                else:
                    assert torch.equal(((x[ei[0]] - x[ei[1]])**2).sum(-1),
                                       ((x[row] - x[col])**2).sum(-1))
            if sim == 'rbf':
                assert all(g[name, sim][2] is None for g in got)
                continue
            mine = torch.cat([g[name, sim][2] for g in got])
            assert torch.allclose(mine, ref_vals.reshape(-1), rtol=1e-12,
                                  atol=1e-12)
            assert torch.allclose(mine, score, rtol=1e-12, atol=1e-12)
            lo = 0
            for r, g in enumerate(got):  # each rank holds its own rows
                hi = lo + sizes[r]
                assert torch.equal(g[name, sim, 'pattern'],
                                   rows_of(pattern, lo, hi))
                lo = hi
    blocked = canonical_knn(cases(world)['tied']['a'], K, 'cosine')
    assert torch.equal(torch.cat([g['blocked'][1] for g in got]),
                       blocked[1].reshape(-1))
    complete = torch.cat([g['complete'] for g in got], 1)
    assert torch.equal(complete, knn_pattern({'a': cases(world)['distinct'][
        'a']}, n - 1))
    assert all(g['sizes'] == sizes for g in got)
    for g in got:  # every rank raised, with the same message
        errors = g['errors']
        assert 'same k' in errors['k']
        assert 'same feature width d' in errors['d']
        assert 'same dtype' in errors['dtype']
        assert f'k <= N - 1 = {n - 1}' in errors['big k']
        assert f'rank {world - 1} contains NaN or Inf' in errors['nan']
        assert 'same view names' in errors['names']
    assert [g['errors'] for g in got] == [got[0]['errors']] * world


def test_errors_in_one_process(tmp_path):
    x = torch.randn(10, 3)
    with pytest.raises(RuntimeError, match='init_process_group'):
        partitioned_knn(x, 3)
    with pytest.raises(RuntimeError, match='init_process_group'):
        partitioned_pattern({'a': x}, 3)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/init',
                            rank=0, world_size=1)
    try:
        for k in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match='positive integer'):
                partitioned_knn(x, k)
            with pytest.raises(ValueError, match='positive integer'):
                partitioned_pattern({'a': x}, k)
        for k in (10, 11):
            with pytest.raises(ValueError, match='k <= N - 1 = 9'):
                partitioned_knn(x, k)
        with pytest.raises(ValueError, match='similarity'):
            partitioned_knn(x, 3, 'l1')
        with pytest.raises(ValueError, match='shape'):
            partitioned_knn(x[0], 3)
        with pytest.raises(ValueError, match='zero norm'):
            partitioned_pattern({'a': torch.cat([x, x.new_zeros(1, 3)])}, 3)
        with pytest.raises(ValueError, match='different number of rows'):
            partitioned_pattern({'a': x, 'b': x[:5]}, 3)
        # One process is the single-process search, and the group is left
        # usable after the errors.
        row, col, score = partitioned_knn(x.double(), 3)
        ei, ref = exact_knn(x.double(), 3, return_scores=True)
        assert torch.equal(torch.stack([row, col]), ei)
        assert torch.allclose(score, ref)
        assert torch.equal(partitioned_pattern({'a': x.double()}, 3),
                           knn_pattern({'a': x.double()}, 3))
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()
