import pytest
import torch

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
