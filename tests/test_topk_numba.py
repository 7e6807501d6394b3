r"""The compiled top-k of the exact kNN search equals torch's."""
import numpy as np
import pytest
import torch

from pyg_lego.data import knn
from pyg_lego.data.knn import exact_knn
from pyg_lego.numba_runtime import available

pytestmark = pytest.mark.skipif(not available(), reason='needs numba')


def select(s, k):
    from pyg_lego.data import topk_numba
    index = np.empty((s.size(0), k), np.int64)
    value = np.empty((s.size(0), k), s.numpy().dtype)
    topk_numba.load(value.dtype)
    topk_numba.select_topk(s.numpy(), k, index, value)
    return torch.from_numpy(index), torch.from_numpy(value)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('n,k', [(1000, 5), (1000, 16), (999, 7), (100, 16),
                                 (40, 16), (17, 16), (4096, 1)])
def test_select_equals_topk(dtype, n, k):
    gen = torch.Generator().manual_seed(n + k)
    s = torch.randn(37, n, generator=gen, dtype=dtype)
    rows = torch.arange(min(37, n))
    s[rows, rows] = float('-inf')  # own column
    s[3, -4:] = 50.0 + torch.arange(4.)  # winners in the ragged tail
    s[5, :16] = 40.0 + torch.arange(16.)  # all in the first group
    index, value = select(s, k)
    ref = s.topk(k, dim=1)  # random scores: no ties
    assert torch.equal(value, ref.values)
    assert torch.equal(index, ref.indices)


def test_ties_keep_the_earlier_columns():
    s = torch.zeros(3, 50)
    s[torch.arange(3), torch.arange(3)] = float('-inf')
    s[2, 40] = 1.0
    index, value = select(s, 4)
    assert index.tolist() == [[1, 2, 3, 4], [0, 2, 3, 4], [40, 0, 1, 3]]
    assert value.tolist() == [[0.0] * 4, [0.0] * 4, [1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize('k', [1, 8, 16])
def test_ties_at_the_lower_bound(k):
    # Few distinct scores: the k-th largest often equals the bound, and the
    # scores equal to it must still enter the buffer, earlier columns first.
    gen = torch.Generator().manual_seed(k)
    s = torch.randint(0, 6, (64, 1000), generator=gen).float()
    s[:, 500:] -= 1.0  # fewer top scores in later columns
    index, value = select(s, k)
    ref = s.sort(dim=1, descending=True, stable=True)
    assert torch.equal(value, ref.values[:, :k])
    assert torch.equal(index, ref.indices[:, :k])


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('similarity,dtype', [
    ('cosine', torch.float32), ('dot', torch.float64),
    ('rbf', torch.float32)])
def test_exact_knn_compiled_equals_torch(monkeypatch, similarity, dtype,
                                         threads):
    x = torch.randn(700, 12, generator=torch.Generator().manual_seed(3),
                    dtype=dtype)
    # 40-row blocks: many blocks on each thread.
    kw = dict(similarity=similarity, memory_budget=2 * 40 * 700 * 8,
              return_scores=True)
    monkeypatch.setattr(knn, 'COMPILED_MIN_SCORES', 1 << 62)
    ref_index, ref_score = exact_knn(x, 9, **kw)
    monkeypatch.setattr(knn, 'COMPILED_MIN_SCORES', 0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        index, score = exact_knn(x, 9, **kw)
        # The search's threads set their own thread count, not this one's.
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert torch.equal(index, ref_index)
    if similarity == 'rbf':
        assert score is None and ref_score is None
    else:
        assert torch.equal(score, ref_score)


def test_compiled_search_by_scores_searched(monkeypatch):
    used = []
    real = knn._search_compiled
    monkeypatch.setattr(knn, '_search_compiled',
                        lambda *args: used.append(1) or real(*args))
    monkeypatch.setattr(knn, '_scored', 0)
    monkeypatch.setattr(knn, 'COMPILED_MIN_NODES', 80)
    monkeypatch.setattr(knn, 'COMPILED_MIN_SCORES', 3 * 80 * 80)
    x = torch.randn(80, 4)
    ref = exact_knn(x, 3)
    exact_knn(x.double(), 3)
    assert used == []  # 12,800 pairs scored: torch's top-k
    assert torch.equal(exact_knn(x, 3), ref)  # 19,200: the loop from here
    assert used == [1]
    exact_knn(x.half(), 3)  # no compiled loop for half precision
    exact_knn(torch.randn(79, 4), 3)  # too few nodes
    assert used == [1] and knn._scored == 3 * 80 * 80 + 79 * 79
    assert torch.equal(exact_knn(x.double(), 3), ref)
    assert used == [1, 1]


def test_compiled_search_shows_progress(monkeypatch, capsys):
    monkeypatch.setattr(knn, 'COMPILED_MIN_SCORES', 0)
    monkeypatch.setattr(knn, 'COMPILED_MIN_NODES', 0)
    x = torch.randn(200, 4)
    exact_knn(x, 3, memory_budget=2 * 50 * 200 * 4, progress=True)
    err = capsys.readouterr().err
    assert 'exact kNN' in err and '4/4' in err
