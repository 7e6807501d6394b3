r"""The numba kernels of the masked power against the torch ones and the
dense oracle."""
import os

import numpy as np
import pytest
import torch

from pyg_lego import LEGO, dense, numba_runtime
from pyg_lego.nn import GraphPowerConv, locality, two_hop_paths

from .conftest import dense_at
from .test_scale import expand, graph

pytest.importorskip('numba')


@pytest.mark.parametrize('P', [2, 3, 4])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_numba_equals_torch_values_and_gradients(P, dtype):
    _, data = graph(dtype=dtype)
    weight = torch.randn(data.num_edges, 3, P + 1, dtype=dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else \
        dict(atol=1e-12, rtol=0)
    ref_attr, ref = expand(data, P, budget=None, kernel='torch')
    nb_attr, out = expand(data, P, budget=None, kernel='numba')
    assert torch.allclose(out, ref, **tol)
    (ref * weight).sum().backward()
    (out * weight).sum().backward()
    assert torch.allclose(nb_attr.grad, ref_attr.grad, **tol)


@pytest.mark.parametrize('budget', [0, None])  # walks, stored paths
def test_numba_matches_dense_oracle_on_knn_and_complete_patterns(budget):
    for k in (5, 39):  # 39 = N - 1: the complete graph
        views, data = graph(n=40, k=k)
        # Without the dense fast path that the complete graph would take.
        conv = GraphPowerConv(4, kernel='numba', dense_blocks=False,
                              memory_budget=budget)
        out = conv(data.edge_index, data.edge_attr)
        mask, r = dense.relation_graph(views, k=k)
        expected = dense_at(dense.graph_powers(r, mask, 4, 'masked'),
                            data.edge_index)
        assert torch.allclose(out, expected, atol=1e-10)


@pytest.mark.parametrize('budget', [0, None])  # walks, stored paths
def test_numba_gradcheck(budget):
    _, data = graph(n=12, widths=(3, 2), k=3)
    attr = data.edge_attr.detach().clone().requires_grad_(True)
    conv = GraphPowerConv(3, mode='masked', kernel='numba',
                          dense_blocks=False, memory_budget=budget)
    assert torch.autograd.gradcheck(
        lambda e: conv(data.edge_index, e, num_nodes=data.num_nodes), (attr,))


def test_stored_paths_equal_the_walk(monkeypatch):
    from pyg_lego.nn import masked_numba
    _, data = graph()
    paths = two_hop_paths(data.edge_index, data.num_nodes)
    weight = torch.randn(data.num_edges, 3, 4, dtype=torch.float64)
    enumerated = []
    real = masked_numba.StoredPaths.enumerate
    monkeypatch.setattr(masked_numba.StoredPaths, 'enumerate',
                        lambda *a: enumerated.append(real(*a)) or
                        enumerated[-1])
    results = []
    for kw in ({'memory_budget': 0},  # walks the pattern
               {},  # enumerates the paths: they fit the default budget
               {'path_index': paths[:, torch.randperm(paths.size(1))]}):
        attr = data.edge_attr.detach().clone().requires_grad_(True)
        conv = GraphPowerConv(3, kernel='numba',
                              memory_budget=kw.pop('memory_budget', 2**31))
        out = conv(data.edge_index, attr, num_nodes=data.num_nodes, **kw)
        (out * weight).sum().backward()
        results.append((out.detach(), attr.grad))
    assert len(enumerated) == 1 and enumerated[0] is not None
    with torch.no_grad():  # no backward pass to pay the enumeration back
        out = GraphPowerConv(3, kernel='numba')(
            data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
    assert len(enumerated) == 1
    assert torch.allclose(out, results[0][0], atol=1e-12)
    for out, grad in results[1:]:
        assert torch.allclose(out, results[0][0], atol=1e-12)
        assert torch.allclose(grad, results[0][1], atol=1e-12)


def test_enumerated_paths_equal_the_torch_index():
    from pyg_lego.nn import masked_numba
    _, data = graph(n=120)
    num_edges = data.num_edges
    for reorder in (False, True):
        pattern = masked_numba.Pattern(data.edge_index, data.num_nodes,
                                       reorder=reorder)
        given = masked_numba.StoredPaths.from_index(
            two_hop_paths(data.edge_index, data.num_nodes), pattern)
        found = masked_numba.StoredPaths.enumerate(pattern)
        assert found.first.dtype == torch.int32
        assert torch.equal(found.ptr, given.ptr)
        assert torch.equal(found.t_ptr, given.t_ptr)
        # The same paths, in either grouping (the order within a group
        # follows the input's edge ids in one, the kernels' in the other).
        for ptr, ids in (('ptr', ('first', 'second')),
                         ('t_ptr', ('t_closing', 't_first'))):
            def keys(stored):
                group = torch.repeat_interleave(
                    torch.arange(num_edges),
                    getattr(stored, ptr).diff().long())
                a, b = (getattr(stored, n).long() for n in ids)
                return torch.sort((group * num_edges + a) * num_edges + b
                                  ).values
            assert torch.equal(keys(found), keys(given))
        # Only the walks' weight gradient reads the transposed pattern.
        assert pattern._csr._t is None
        assert pattern.num_candidates >= found.first.numel()
        total = found.first.numel()
        assert masked_numba.StoredPaths.enumerate(pattern, total) is not None
        assert masked_numba.StoredPaths.enumerate(pattern, total - 1) is None
    empty = masked_numba.Pattern(torch.empty(2, 0, dtype=torch.long), 5)
    assert masked_numba.StoredPaths.enumerate(empty).first.numel() == 0


def test_cached_numba_plan_stores_paths_within_the_budget():
    _, data = graph()
    num_paths = two_hop_paths(data.edge_index, data.num_nodes).size(1)
    conv = GraphPowerConv(3, kernel='numba', cached=True,
                          memory_budget=16 * num_paths)
    out = conv(data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
    pattern, stored = conv._cached_numba
    assert stored is not None and stored.first.numel() == num_paths
    assert stored.first.dtype == torch.int32
    assert torch.allclose(conv(data.edge_index, data.edge_attr,
                               num_nodes=data.num_nodes), out)
    conv.reset_parameters()
    assert conv._cached_numba is None
    small = GraphPowerConv(3, kernel='numba', cached=True,
                           memory_budget=16 * num_paths - 1)
    again = small(data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
    assert small._cached_numba[1] is None  # walks the pattern instead
    assert torch.allclose(again, out, atol=1e-12)


def test_auto_kernel_uses_numba_on_cpu(monkeypatch):
    from pyg_lego.nn import masked_numba
    calls = []
    real = masked_numba.NumbaMaskedPower.apply
    monkeypatch.setattr(masked_numba.NumbaMaskedPower, 'apply',
                        lambda *a: calls.append(1) or real(*a))
    _, data = graph(n=50)
    GraphPowerConv(3)(data.edge_index, data.edge_attr)
    assert calls
    GraphPowerConv(3, kernel='torch')(data.edge_index, data.edge_attr)
    assert len(calls) == 1


def test_kernel_errors(monkeypatch):
    _, data = graph(n=30, widths=(3,))
    with pytest.raises(ValueError, match='kernel must be one of'):
        GraphPowerConv(3, kernel='cuda')
    conv = GraphPowerConv(3, kernel='numba')
    with pytest.raises(ValueError, match='float32/float64 CPU'):
        conv(data.edge_index, data.edge_attr.to(torch.bfloat16))
    from pyg_lego.nn import masked_numba
    monkeypatch.setattr(masked_numba, 'available', lambda: False)
    with pytest.raises(ImportError, match=r"pyg-lego\[numba\]"):
        GraphPowerConv(3, kernel='numba')
    # 'auto' falls back to torch without numba.
    out = LEGO(data.view_names, P=3).fuse(data)
    assert out.shape == (data.num_edges, 1)


@pytest.mark.parametrize('stored', ['walk', 'enumerated', 'given'])
def test_relabelled_pattern_gives_the_same_orders(monkeypatch, stored):
    from pyg_lego.nn import masked_numba
    _, data = graph(n=120)
    paths = two_hop_paths(data.edge_index, data.num_nodes) \
        if stored == 'given' else None
    budget = 0 if stored == 'walk' else None
    weight = torch.randn(data.num_edges, 3, 4, dtype=torch.float64)
    results = []
    # Groups of 8 nodes: 120 nodes are renumbered, not left as they are.
    monkeypatch.setattr(locality, 'LEAF_SIZE', 8)
    for threshold in (10**9, 0):  # as given, then relabelled
        monkeypatch.setattr(locality, 'RELABEL_MIN_EDGES', threshold)
        attr = data.edge_attr.detach().clone().requires_grad_(True)
        conv = GraphPowerConv(3, kernel='numba', cached=True,
                              memory_budget=budget)
        out = conv(data.edge_index, attr, num_nodes=data.num_nodes,
                   path_index=paths)
        assert (conv._cached_numba[1] is None) == (stored == 'walk')
        (out * weight).sum().backward()
        pattern = conv._cached_numba[0]
        results.append((out.detach(), attr.grad, pattern.edge_perm))
    assert results[0][2] is None
    perm = results[1][2]
    assert perm is not None and not torch.equal(
        perm, torch.arange(data.num_edges))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-12)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-12)


def test_numba_that_fails_to_import_counts_as_absent(monkeypatch):
    import builtins
    from pyg_lego.nn import masked_numba
    real = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == 'numba':
            raise AttributeError('numba built against another NumPy')
        return real(name, *args, **kwargs)
    masked_numba.available.cache_clear()
    monkeypatch.setattr(builtins, '__import__', broken)
    try:
        assert not masked_numba.available()
        _, data = graph(n=40, widths=(3,))
        conv = GraphPowerConv(3)  # 'auto' runs the torch kernel instead
        assert conv(data.edge_index, data.edge_attr).shape == \
            (data.num_edges, 1, 4)
    finally:
        masked_numba.available.cache_clear()


def test_kernels_run_on_one_openmp_runtime():
    # In a fresh process: numba's 'omp' layer would load a second libgomp
    # beside torch's.
    import subprocess
    import sys
    code = (
        "import torch, numba\n"
        "from pyg_lego import build_relation_graph\n"
        "from pyg_lego.nn import GraphPowerConv\n"
        "d = build_relation_graph({'a': torch.randn(80, 4)}, k=5)\n"
        "GraphPowerConv(3, kernel='numba', dense_blocks=False)("
        "d.edge_index, d.edge_attr)\n"
        "libs = {l.split()[-1] for l in open('/proc/self/maps') "
        "if 'libgomp' in l}\n"
        "print(numba.threading_layer(), len(libs))\n")
    env = {k: v for k, v in os.environ.items()
           if k != 'NUMBA_THREADING_LAYER'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['workqueue', '1']


def test_kernels_called_from_two_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor
    _, data = graph(n=150)
    conv = GraphPowerConv(3, kernel='numba', dense_blocks=False)
    ref = conv(data.edge_index, data.edge_attr)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: conv(data.edge_index, data.edge_attr),
                             range(6)))
    for out in outs:
        assert torch.equal(out, ref)


def test_compiling_a_kernel_leaves_no_cycles_holding_the_callers_tensors():
    import gc
    import weakref
    nb = numba_runtime.numba()

    @nb.njit
    def fill(a):
        # Typing np.full with a dtype makes numba catch errors whose frames
        # reach up the stack (without the collection in call(): 5 GB of
        # tensors held after the masked backward pass at N = 1M).
        a[:] = np.full(a.size, -1, a.dtype)

    def caller():
        held = torch.zeros(4, dtype=torch.int32)
        numba_runtime.call(fill, held.numpy())
        assert held.tolist() == [-1] * 4
        return weakref.ref(held)

    gc.collect()
    gc.disable()
    try:
        held = caller()
        assert held() is None  # freed on return, without a collection
    finally:
        gc.enable()


def _path_passes(kernels, stored, pattern, a, grad):
    r"""The three stored-path passes of :obj:`kernels` on one input."""
    forward, carry, weight = kernels
    outs = [np.zeros_like(a) for _ in range(3)]
    numba_runtime.call(forward, *stored.numpy('ptr', 'first', 'second'), a,
                       a, outs[0])
    numba_runtime.call(carry, pattern.rowptr.numpy(),
                       *stored.numpy('ptr', 'first', 'second'), grad, a,
                       outs[1], pattern.num_chunks)
    numba_runtime.call(weight, *stored.numpy('t_ptr', 't_closing', 't_first'),
                       grad, a, outs[2])
    return outs


@pytest.mark.parametrize('views', [1, 3])
def test_prefetching_path_kernels_equal_the_plain_ones(monkeypatch, views):
    from pyg_lego.nn import masked_numba
    # Paths of more than PREFETCH_DISTANCE per edge and fewer, so that the
    # hints run ahead within a group, across groups, and off the end.
    monkeypatch.setattr(masked_numba, 'PREFETCH_DISTANCE', 5)
    _, data = graph(n=60, k=4)
    pattern = masked_numba.Pattern(data.edge_index, data.num_nodes)
    stored = masked_numba.StoredPaths.enumerate(pattern)
    gen = np.random.default_rng(views)
    a = gen.random((data.num_edges, views))
    grad = gen.random((data.num_edges, views))
    build = masked_numba._path_kernels.__wrapped__  # uncached: D = 5
    plain = _path_passes(build(views, prefetch=False), stored, pattern, a,
                         grad)
    hinted = _path_passes(build(views, prefetch=True), stored, pattern, a,
                          grad)
    for x, y in zip(plain, hinted):
        assert np.array_equal(x, y)
    # Without the hint (a numba that cannot compile it), the same again.
    monkeypatch.setattr(numba_runtime, 'prefetch', lambda: None)
    fallback = _path_passes(build(views, prefetch=True), stored, pattern, a,
                            grad)
    for x, y in zip(plain, fallback):
        assert np.array_equal(x, y)


def test_prefetching_walks_and_gather_equal_the_plain_ones():
    from pyg_lego.nn import masked_numba
    _, data = graph(n=60, k=4)
    pattern = masked_numba.Pattern(data.edge_index, data.num_nodes)
    gen = np.random.default_rng(0)
    a, grad = gen.random((2, data.num_edges, 3))
    perm = gen.permutation(data.num_edges)
    rowptr, col, t_rowptr, t_src, t_edge = pattern.numpy(
        'rowptr', 'col', 't_rowptr', 't_src', 't_edge')
    results = []
    for hint in (False, True):  # False: the no-op a failed probe leaves
        kernels = masked_numba._kernels.__wrapped__(prefetch=hint)
        outs = [np.zeros_like(a) for _ in range(4)]
        for name, src, out in (('row', a, outs[0]), ('carry', grad, outs[1])):
            numba_runtime.call(getattr(kernels, name), rowptr, col, src, a,
                               out, pattern.num_nodes, pattern.num_chunks)
        numba_runtime.call(kernels.weight, rowptr, col, t_rowptr, t_src,
                           t_edge, grad, a, outs[2], pattern.num_nodes,
                           pattern.num_chunks)
        numba_runtime.call(kernels.gather, a, perm, outs[3])
        results.append(outs)
    assert np.array_equal(results[1][3], a[perm])
    for x, y in zip(*results):
        assert np.array_equal(x, y)


def test_prefetch_hint_compiles_or_falls_back(monkeypatch):
    import numba.extending
    # The numba that CI installs compiles the hint (without it, the
    # stored-path passes took up to 1.9x as long at N = 64,000, unnoticed).
    assert numba_runtime.prefetch() is not None

    def broken(*args, **kwargs):
        raise NotImplementedError('no intrinsics here')
    numba_runtime.prefetch.cache_clear()
    monkeypatch.setattr(numba.extending, 'intrinsic', broken)
    try:
        assert numba_runtime.prefetch() is None
    finally:
        numba_runtime.prefetch.cache_clear()
