r"""The numba kernels of the masked power against the torch ones and the
dense oracle."""
import os
import sys

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
    # Counted and over the budget of 0, then stored; a given index is used.
    assert [found is not None for found in enumerated] == [False, True]
    with torch.no_grad():
        # One pass by walks is cheaper than storing the paths for it.
        out = GraphPowerConv(2, kernel='numba')(
            data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
        assert len(enumerated) == 2
        assert torch.allclose(out, results[0][0][..., :3], atol=1e-12)
        # Two passes pay the enumeration back.
        out = GraphPowerConv(3, kernel='numba')(
            data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
        assert len(enumerated) == 3
    assert torch.allclose(out, results[0][0], atol=1e-12)
    for out, grad in results[1:]:
        assert torch.allclose(out, results[0][0], atol=1e-12)
        assert torch.allclose(grad, results[0][1], atol=1e-12)


def _decoded(stored, pattern):
    r"""The paths of :obj:`stored` as sorted keys of their (closing, first,
    second) edge ids in the pattern."""
    rowptr, col, row = pattern.rowptr.long(), pattern.col.long(), pattern.row
    first = torch.repeat_interleave(
        torch.arange(col.numel()),
        torch.from_numpy(np.diff(stored.ptr)).long())
    pairs = torch.from_numpy(stored.pairs.astype(np.int64))
    closing = rowptr[row[first]] + pairs[:, 0]
    second = rowptr[col[first]] + pairs[:, 1]
    num_edges = col.numel()
    return torch.sort((closing * num_edges + first) * num_edges + second
                      ).values


def test_enumerated_paths_equal_the_torch_index():
    from pyg_lego.nn import masked_numba
    _, data = graph(n=120)
    paths = two_hop_paths(data.edge_index, data.num_nodes)
    for reorder in (False, True):
        pattern = masked_numba.Pattern(data.edge_index, data.num_nodes,
                                       reorder=reorder)
        given = masked_numba.StoredPaths.from_index(paths, pattern)
        found = masked_numba.StoredPaths.enumerate(pattern)
        assert found.pairs.dtype == np.uint8  # rows of at most 256 edges
        assert masked_numba.StoredPaths.bytes_per_path(pattern) == 2
        assert np.array_equal(found.ptr, given.ptr)
        # The same paths as the torch index, mapped to the pattern's ids.
        ids = pattern.edge_ids(paths).long()
        num_edges = data.num_edges
        expected = torch.sort((ids[2] * num_edges + ids[0]) * num_edges
                              + ids[1]).values
        assert torch.equal(_decoded(found, pattern), expected)
        assert torch.equal(_decoded(given, pattern), expected)
        if not reorder:  # the index's order within a group is j's too
            assert np.array_equal(found.pairs, given.pairs)
        # Only the weight gradient reads the transposed pattern.
        assert pattern._csr._t is None
        total = found.num_paths
        assert total == paths.size(1)
        assert masked_numba.StoredPaths.enumerate(pattern, total) is not None
        assert masked_numba.StoredPaths.enumerate(pattern, total - 1) is None
    empty = masked_numba.Pattern(torch.empty(2, 0, dtype=torch.long), 5)
    assert masked_numba.StoredPaths.enumerate(empty).num_paths == 0


@pytest.mark.parametrize('n,dtype,narrower', [(300, np.uint16, np.uint8),
                                              (66_000, np.uint32, np.uint16)])
def test_positions_widen_for_long_rows(n, dtype, narrower):
    from pyg_lego.nn import masked_numba
    # A hub joined to every node of a ring: its row holds n edges, more
    # than 8 (or 16) bits can place.
    ring = torch.arange(1, n)
    hub = torch.zeros_like(ring)
    nxt = ring % (n - 1) + 1
    edge_index = torch.cat([torch.stack([hub, ring]), torch.stack([ring, hub]),
                            torch.stack([ring, nxt]), torch.stack([nxt, ring]),
                            torch.arange(n).repeat(2, 1)], 1)
    edge_index = torch.unique(edge_index, dim=1)  # sorted by row, then col
    pattern = masked_numba.Pattern(edge_index, n, reorder=False)
    stored = masked_numba.StoredPaths.enumerate(pattern)
    assert stored.pairs.dtype == dtype
    assert int(stored.pairs.max()) > np.iinfo(narrower).max
    attr = torch.rand(edge_index.size(1), 2, dtype=torch.float64)
    weight = torch.randn(edge_index.size(1), 2, 4, dtype=torch.float64)
    results = []
    for kernel in ('torch', 'numba'):
        a = attr.clone().requires_grad_(True)
        out = GraphPowerConv(3, kernel=kernel, dense_blocks=False)(
            edge_index, a, num_nodes=n)
        (out * weight).sum().backward()
        results.append((out.detach(), a.grad))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-12)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-12)


def test_a_path_index_of_another_pattern_is_rejected():
    from pyg_lego.nn import masked_numba
    _, data = graph(n=60)
    paths = two_hop_paths(data.edge_index, data.num_nodes)
    pattern = masked_numba.Pattern(data.edge_index, data.num_nodes)
    conv = GraphPowerConv(3, kernel='numba')
    swapped = paths[[1, 0, 2]]  # second edges in place of first ones
    assert not torch.equal(swapped, paths)
    for bad, match in ((paths[:2], 'shape'),
                       (paths + data.num_edges, 'columns'),
                       (paths - 1, 'columns'),
                       (swapped, 'no path i -> l -> j')):
        with pytest.raises(ValueError, match=match):
            masked_numba.StoredPaths.from_index(bad, pattern)
    with pytest.raises(ValueError, match='no path'):
        conv(data.edge_index, data.edge_attr, num_nodes=data.num_nodes,
             path_index=swapped)


def test_cached_numba_plan_stores_paths_within_the_budget():
    _, data = graph()
    num_paths = two_hop_paths(data.edge_index, data.num_nodes).size(1)
    conv = GraphPowerConv(3, kernel='numba', cached=True,
                          memory_budget=2 * num_paths)
    out = conv(data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
    pattern, stored = conv._cached_numba
    assert stored is not None and stored.num_paths == num_paths
    assert stored.ptr.dtype == np.int32
    assert torch.allclose(conv(data.edge_index, data.edge_attr,
                               num_nodes=data.num_nodes), out)
    conv.reset_parameters()
    assert conv._cached_numba is None
    small = GraphPowerConv(3, kernel='numba', cached=True,
                           memory_budget=2 * num_paths - 1)
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
    out = LEGO(data.view_names, P=3, mode='masked').fuse(data)
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


def test_only_a_cached_conv_relabels_the_masked_pattern(monkeypatch):
    # Relabelling per call costs more than it saves; built once and reused
    # it pays (benchmarks/results/switches.md).
    _, data = graph(n=120)
    built = []
    relabel = locality.Relabel

    def counted(*args, **kwargs):
        built.append(1)
        return relabel(*args, **kwargs)
    monkeypatch.setattr(locality, 'Relabel', counted)
    monkeypatch.setattr(locality, 'RELABEL_MIN_EDGES', 0)
    monkeypatch.setattr(locality, 'LEAF_SIZE', 8)
    plain = GraphPowerConv(3, kernel='numba')
    ref = plain(data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
    assert built == []
    cached = GraphPowerConv(3, kernel='numba', cached=True)
    for _ in range(2):
        out = cached(data.edge_index, data.edge_attr,
                     num_nodes=data.num_nodes)
        assert torch.allclose(out, ref, atol=1e-6)
    assert built == [1] and cached._cached_numba[0].edge_perm is not None


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


def _layer_in_fresh_process(before: str = '') -> list:
    # A fresh process: the threading layer is chosen once per process.
    import subprocess
    code = (
        "import torch, numba\n"
        "from pyg_lego import build_relation_graph, numba_runtime\n"
        "from pyg_lego.nn import GraphPowerConv\n"
        f"{before}"
        "d = build_relation_graph({'a': torch.randn(80, 4)}, k=5)\n"
        "conv = GraphPowerConv(3, kernel='numba', dense_blocks=False)\n"
        "out = conv(d.edge_index, d.edge_attr)\n"
        "ref = GraphPowerConv(3, kernel='torch', dense_blocks=False)("
        "d.edge_index, d.edge_attr)\n"
        "libs = {l.split()[-1] for l in open('/proc/self/maps') "
        "if 'libgomp' in l}\n"
        "print(numba.threading_layer(), len(libs), "
        "torch.allclose(out, ref, atol=1e-6))\n")
    env = {k: v for k, v in os.environ.items()
           if k != 'NUMBA_THREADING_LAYER'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def _tbb_installed() -> bool:
    from importlib.metadata import PackageNotFoundError, version
    try:
        version('tbb')
    except PackageNotFoundError:
        return False
    return sys.platform.startswith('linux')


def test_kernels_run_on_tbb_where_installed():
    # TBB where the package is installed (the dev extra), never numba's
    # 'omp' layer, which would load a second libgomp beside torch's.
    layer = 'tbb' if _tbb_installed() else 'workqueue'
    assert _layer_in_fresh_process() == [layer, '1', 'True']


def test_pynndescent_first_takes_the_same_layer():
    # Its parallel loops start numba's layer before ours would. (It imports
    # scikit-learn, which brings its own libgomp: not counted here.)
    pytest.importorskip('pynndescent')
    layer = 'tbb' if _tbb_installed() else 'workqueue'
    found = _layer_in_fresh_process(
        "from pyg_lego.data import knn_search\n"
        "knn_search(torch.randn(300, 8), 5, backend='pynndescent')\n")
    assert found[0] == layer and found[2] == 'True'


def test_kernels_fall_back_to_workqueue_without_tbb():
    assert _layer_in_fresh_process(
        "numba_runtime.tbb_loaded = lambda: False\n") == \
        ['workqueue', '1', 'True']


def _power_in_child(conv, data, ref, queue):
    # One torch thread, as DataLoader workers set: torch's OpenMP pool,
    # started in the parent, hangs a forked child that enters it.
    torch.set_num_threads(1)
    out = conv(data.edge_index, data.edge_attr)
    queue.put(bool(torch.allclose(out, ref, atol=1e-12)))


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='needs fork')
def test_kernels_run_in_forked_children():
    # As in DataLoader workers: the parent has started the threading layer
    # (the children run the kernels on one thread, and on TBB's).
    import multiprocessing
    _, data = graph(n=150)
    conv = GraphPowerConv(3, kernel='numba', dense_blocks=False)
    ref = conv(data.edge_index, data.edge_attr)
    context = multiprocessing.get_context('fork')
    queue = context.Queue()
    children = [context.Process(target=_power_in_child,
                                args=(conv, data, ref, queue))
                for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=120)
    assert results == [True, True]
    assert [child.exitcode for child in children] == [0, 0]


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
    rowptr, col, t_rowptr, t_src, t_edge = pattern.numpy(
        'rowptr', 'col', 't_rowptr', 't_src', 't_edge')
    chunks = pattern.num_chunks
    numba_runtime.call(forward, rowptr, col, stored.ptr, stored.pairs, a, a,
                       outs[0], chunks)
    numba_runtime.call(carry, rowptr, col, stored.ptr, stored.pairs, grad, a,
                       outs[1], chunks)
    numba_runtime.call(weight, rowptr, t_rowptr, t_src, t_edge,
                       *stored.bounds(pattern), stored.pairs, grad, a,
                       outs[2], chunks)
    return outs


def _path_inputs(views):
    r"""A small graph, its pattern and stored paths, and random scores and
    gradients of :obj:`views` columns."""
    from pyg_lego.nn import masked_numba
    _, data = graph(n=60, k=4)
    pattern = masked_numba.Pattern(data.edge_index, data.num_nodes)
    stored = masked_numba.StoredPaths.enumerate(pattern)
    gen = np.random.default_rng(views)
    a, grad = gen.random((2, data.num_edges, views))
    return data, pattern, stored, a, grad


@pytest.mark.parametrize('views', [1, 3])
def test_path_kernels_equal_the_torch_passes(views):
    from pyg_lego.nn import masked_numba
    data, pattern, stored, a, grad = _path_inputs(views)
    forward, carry, weight = _path_passes(
        masked_numba._path_kernels(views), stored, pattern, a, grad)
    # The same sums over the torch index, in the pattern's edge ids.
    first, second, closing = pattern.edge_ids(
        two_hop_paths(data.edge_index, data.num_nodes))
    a_t, grad_t = torch.from_numpy(a), torch.from_numpy(grad)
    zero = torch.zeros_like(a_t)
    expected = (zero.index_add(0, closing, a_t[first] * a_t[second]),
                zero.index_add(0, first, grad_t[closing] * a_t[second]),
                zero.index_add(0, second, grad_t[closing] * a_t[first]))
    for out, ref in zip((forward, carry, weight), expected):
        assert torch.allclose(torch.from_numpy(out), ref, atol=1e-12)


@pytest.mark.parametrize('views', [1, 3])
def test_prefetching_path_kernels_equal_the_plain_ones(monkeypatch, views):
    from pyg_lego.nn import masked_numba
    # More first edges ahead than some rows hold, so that the hints run
    # ahead within a row, across rows, and off the end.
    monkeypatch.setattr(masked_numba, 'PATH_AHEAD', 5)
    _, pattern, stored, a, grad = _path_inputs(views)
    build = masked_numba._path_kernels.__wrapped__  # uncached: A = 5
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
