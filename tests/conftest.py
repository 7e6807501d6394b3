import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# The tests run small ops, for which two OpenMP threads on a shared 2-core
# machine cost more in contention than they gain (measured 3.6 s vs 32 s for
# tests/test_neighbor_loader.py under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)


def random_views(num_nodes, widths, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {f'v{m}': torch.randn(num_nodes, d, generator=gen, dtype=dtype)
            for m, d in enumerate(widths)}


def dense_at(dense, edge_index):
    r"""Values of a dense tensor [..., N, N] at the edges, moved to
    [E, ...]."""
    vals = dense[..., edge_index[0], edge_index[1]]
    return vals.movedim(-1, 0)


#: The marks of a test that needs CUDA: ``cuda`` (a session lent a GPU
#: runs them alone with ``pytest -m cuda``), and skipped where torch sees
#: no CUDA device. For ``pytest.param(..., marks=CUDA)``.
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                             reason='needs a CUDA device')]


def requires_cuda(test):
    r"""Marks a test with :data:`CUDA`."""
    for mark in CUDA:
        test = mark(test)
    return test


def free_port() -> int:
    r"""A TCP port that is free now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def raised_errors(calls):
    r"""The :class:`ValueError` message each call raises (:obj:`None` where
    it raises none), so that every rank's messages can be compared."""
    found = {}
    for what, call in calls.items():
        try:
            call()
            found[what] = None
        except ValueError as e:
            found[what] = f'{type(e).__name__}: {e}'
    return found


def _world_worker(rank, world, init, out, run):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=init, rank=rank,
                            world_size=world)
    try:
        pair = dist.new_group([0, 1])
        result = {4: run(4, rank, None)}
        if rank < 2:
            result[2] = run(2, rank, pair)
        torch.save(result, os.path.join(out, f'{rank}.pt'))
    finally:
        dist.destroy_process_group()


def forked_worlds(run, out):
    r"""Runs :obj:`run(world, rank, group)` on 4 forked gloo processes and,
    on a subgroup of the first 2, with 2; returns each rank's results as
    :obj:`{4: ..., 2: ...}` (:obj:`2` on ranks 0 and 1 only). Forked, not
    spawned: a spawned process imports torch and pyg_lego again, which took
    27 of the 28 s of 4 spawned processes on a loaded 2-core machine."""
    mp.start_processes(_world_worker, args=(4, f'tcp://127.0.0.1:'
                                               f'{free_port()}', str(out),
                                            run),
                       nprocs=4, start_method='fork')
    return [torch.load(os.path.join(out, f'{r}.pt'), weights_only=False)
            for r in range(4)]
