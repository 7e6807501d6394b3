r"""Speed and memory of every stage of the sparse LEGO pipeline against N, each
with a baseline measured in the same process.

    python benchmarks/scale.py                  # default sizes, a few minutes
    python benchmarks/scale.py --sizes 2000 8000
    python benchmarks/scale.py --large          # N = 1,000,000 target run

Every size runs in a fresh subprocess (so that its peak resident memory,
``ru_maxrss``, is its own); within it a sampling thread reads the resident set
of ``/proc/self/statm`` to give each stage its own peak (growth over the RSS
at the stage's start, once the memory earlier stages freed has been handed
back to the system). Results go to ``<out>/scale.json``, ``<out>/scale.md``
and ``<out>/scale.png``.

Data: ``M`` views of the same nodes, linear maps of a shared 16-dimensional
Gaussian-mixture latent plus noise (clustered, low intrinsic dimension, as
learned features tend to be). Approximate-kNN recall depends on that.
"""
import argparse
import ctypes
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
#: ``scores``: the union pattern and every view's scores on it, reusing the
#: similarities the kNN searches computed and scoring each pair of edges
#: once (as the library does from ``REUSE_MIN_EDGES``, where numba is
#: installed); ``scores_recomputed``: computing every score;
#: ``paths``: the path index (:func:`two_hop_paths`: numba's walks where
#: numba is installed); ``paths_torch``: the same by torch candidate chunks
#: (what CUDA runs);
#: ``masked``: the default kernel (numba: enumerates the paths, then reads
#: them, where they fit the default budget, as they do up to N = 1M);
#: ``masked_walk``: numba walking the pattern, no index (budget 0: what
#: graphs whose paths exceed the budget get);
#: ``masked_cached``: numba reading a path index cached by an earlier call;
#: ``masked_torch``: torch sparse products over a given path index;
#: ``masked_streamed``: torch, streamed (memory budget 0).
#: The numba stages are n/a where numba is not installed.
STAGES = ('knn', 'scores', 'scores_recomputed', 'paths', 'paths_torch',
          'elementwise', 'masked', 'masked_walk', 'masked_cached',
          'masked_torch', 'masked_streamed', 'propagated', 'fusion')


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakRSS:
    r"""Peak resident-set growth during a ``with`` block (5 ms sampling)."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.bytes = self.peak - self.start


def release_freed_memory() -> None:
    r"""Hands the memory that Python and the C heap hold free back to the
    system (glibc's ``malloc_trim``; elsewhere only a garbage collection),
    so that the next stage's RSS growth counts what it allocates, not only
    what it allocates beyond the free memory an earlier stage left."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def timed(fn: Callable, repeat: int = 1):
    r"""Best wall time of :obj:`repeat` runs, the peak RSS growth of the
    last run (the first may compile kernels), last result. Each run starts
    with :func:`release_freed_memory`."""
    best, out = math.inf, None
    for _ in range(repeat):
        out = None  # freed before the next run starts
        release_freed_memory()
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
    return best, mem.bytes, out


def make_views(n: int, num_views: int, dim: int, seed: int = 0,
               device=None):
    r"""The benchmark's views (see the module's docstring), drawn on
    :obj:`device` (the CPU by default)."""
    import torch
    gen = torch.Generator(device or 'cpu').manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device)
    clusters = max(16, n // 500)
    centers = randn(clusters, 16) * 2
    latent = centers[torch.randint(clusters, (n,), generator=gen,
                                   device=device)] + randn(n, 16)
    return {f'view{m}': latent @ randn(16, dim) + 0.3 * randn(n, dim)
            for m in range(num_views)}


# ---------------------------------------------------------------- one size --

def measure_size(n: int, args) -> Dict:
    import numpy as np
    import torch
    from pyg_lego.data.knn import block_rows
    from pyg_lego.data.backends import knn_search
    from pyg_lego.data.relation import _scores, coalesce_pattern, \
        union_pattern
    from pyg_lego.data.similarity import prepare, resolve_score_map
    from pyg_lego.nn import GraphPowerConv, LEGOFusion, masked_numba, \
        path_index, two_hop_paths
    from pyg_lego.nn.path_index import DEFAULT_PATH_CHUNK

    torch.manual_seed(0)
    k, P, M, d = args.k, args.P, args.views, args.dim
    views = make_views(n, M, d)
    res: Dict = {'N': n, 'k': k, 'P': P, 'views': M, 'dim': d,
                 'time': {}, 'mem': {}, 'baseline': {}}
    # Best of several runs; at least 2, so that one-off costs (numba
    # compiling its kernels, first touch of fresh memory) are not timed.
    rep = 2 if n >= 50_000 else 3

    # kNN: our search against the bare matrix products of the same blocks.
    backend = args.backend
    t, mem, found = timed(lambda: {
        name: knn_search(x, k, backend=backend, progress=args.progress)
        for name, x in views.items()}, rep)
    res['time']['knn'], res['mem']['knn'] = t, mem
    res['knn_backend'] = next(iter(found.values())).backend
    if res['knn_backend'] == 'exact':
        zs = [prepare(x, 'cosine') for x in views.values()]
        rows = block_rows(n, 4)

        def matmuls():
            for z in zs:
                for s in range(0, n, rows):
                    z[s:s + rows] @ z.t()
        t_mm, _, _ = timed(matmuls, rep)
        res['baseline']['knn_matmul'] = t_mm
        res['flops_knn'] = 2.0 * M * n * n * d
    # The union pattern, and every score on it: as the library builds them
    # (the searches' similarities reused), and all computed again.
    smap = resolve_score_map('auto', 'cosine')

    def reused():
        edge_index, known, reverse = union_pattern(views, found, True, n,
                                                   'cpu', reuse=True)
        return edge_index, _scores(views, edge_index, 'cosine', smap, None,
                                   n, known, reverse)

    def recomputed():
        ei = torch.cat([r.edge_index for r in found.values()], 1)
        loop = torch.arange(n)
        edge_index = coalesce_pattern(torch.cat(
            [ei, ei.flip(0), torch.stack([loop, loop])], 1), n)
        return edge_index, _scores(views, edge_index, 'cosine', smap, None,
                                   n)
    t, mem, (edge_index, edge_attr) = timed(reused, rep)
    res['time']['scores'], res['mem']['scores'] = t, mem
    t, mem, (again, _) = timed(recomputed, rep)
    res['time']['scores_recomputed'], res['mem']['scores_recomputed'] = t, mem
    assert torch.equal(again, edge_index)
    E = edge_index.size(1)
    res['E'] = E
    t, mem, paths = timed(lambda: two_hop_paths(edge_index, n), rep)
    res['time']['paths'], res['mem']['paths'] = t, mem
    res['paths'] = paths.size(1)
    t, mem, _ = timed(lambda: path_index._torch_paths(
        edge_index, n, DEFAULT_PATH_CHUNK, None), rep)
    res['time']['paths_torch'], res['mem']['paths_torch'] = t, mem
    xs = list(views.values())

    def expansion(mode, paths_given=False, warm=False, **kw):
        conv = GraphPowerConv(P, mode=mode, **kw)
        if warm:  # The cached index is built by a first call, not timed.
            conv(edge_index, edge_attr, xs=xs, num_nodes=n)

        def run():
            attr = edge_attr.clone().requires_grad_(True)
            x_in = [x.clone().requires_grad_(True) for x in xs]
            out = conv(edge_index, attr, xs=x_in, num_nodes=n,
                       path_index=paths if paths_given else None)
            out.sum().backward()
            return out.detach()
        return run

    res['time']['masked_walk'] = res['mem']['masked_walk'] = None
    for name, mode, kw in (
            ('elementwise', 'elementwise', {}),
            ('masked', 'masked', {}),
            *([('masked_walk', 'masked', {'kernel': 'numba',
                                          'memory_budget': 0})]
              if masked_numba.available() else []),
            ('masked_cached', 'masked', {'cached': True, 'warm': True,
                                         'memory_budget': None}),
            ('masked_torch', 'masked', {'kernel': 'torch',
                                        'paths_given': True}),
            ('masked_streamed', 'masked', {'kernel': 'torch',
                                           'memory_budget': 0}),
            ('propagated', 'propagated', {})):
        t, mem, powers = timed(expansion(mode, **kw), rep)
        res['time'][name], res['mem'][name] = t, mem
    res['kernel'] = GraphPowerConv(P).kernel
    masked_conv = GraphPowerConv(P, mode='masked')
    res['time']['masked_forward'] = timed(lambda: masked_conv(
        edge_index, edge_attr, num_nodes=n), rep)[0]
    prop_conv = GraphPowerConv(P, mode='propagated')
    res['time']['propagated_forward'] = timed(lambda: prop_conv(
        edge_index, edge_attr, xs=xs, num_nodes=n), rep)[0]
    # The same with the locality relabelling switched off (it applies from
    # 8 MiB of features per view: N >= 32000 here).
    from pyg_lego.nn import locality
    threshold = locality.RELABEL_MIN_FEATURE_BYTES
    locality.RELABEL_MIN_FEATURE_BYTES = math.inf
    try:
        res['time']['propagated_forward_unrelabelled'] = timed(
            lambda: prop_conv(edge_index, edge_attr, xs=xs, num_nodes=n),
            rep)[0]
    finally:
        locality.RELABEL_MIN_FEATURE_BYTES = threshold
    fusion = LEGOFusion(M, P, kind='polynomial')
    powers = powers.requires_grad_(True)

    def fuse():
        out = fusion(powers)
        out.sum().backward()
    t, mem, _ = timed(fuse, rep)
    res['time']['fusion'], res['mem']['fusion'] = t, mem

    # The orders of the masked power alone (all M views, normalised scores
    # in, orders 2..P out) from a stored index, against torch.sparse.mm of
    # the path matrix: the same non-zeros (one per path) and width (M).
    # Both id widths: MKL converts 64-bit ids on every call, so the 32-bit
    # matrix is the faster baseline.
    from pyg_lego.nn import relation_norm
    a = relation_norm(edge_index, edge_attr, n).contiguous()
    if masked_numba.available():
        pattern = masked_numba.Pattern(edge_index, n)
        stored = masked_numba.StoredPaths.from_index(paths, pattern)
        res['time']['masked_order'] = timed(
            lambda: masked_numba.NumbaMaskedPower.apply(a, pattern, P, stored),
            rep)[0] / max(1, P - 1)
        res['time']['masked_order_walk'] = timed(
            lambda: masked_numba.NumbaMaskedPower.apply(a, pattern, P), rep
        )[0] / max(1, P - 1)
        # The path kernel alone, on inputs already in the pattern's edge
        # order (no moves between edge orders, no autograd function).
        forward_pass = masked_numba._path_kernels(M)[0]
        a_pat = pattern.to_pattern(a).numpy()
        rowptr, col = pattern.numpy('rowptr', 'col')

        def kernel_orders():
            src = a_pat
            for _ in range(2, P + 1):
                out = np.zeros_like(a_pat)
                masked_numba._call(forward_pass, rowptr, col, stored.ptr,
                                   stored.pairs, src, a_pat, out,
                                   pattern.num_chunks)
                src = out
        res['time']['masked_order_kernel'] = timed(kernel_orders, rep)[0] \
            / max(1, P - 1)
        # Each path reads its two positions and a row of M scores, and adds
        # into another row (read and written).
        per_path = masked_numba.StoredPaths.bytes_per_path(pattern) + \
            3 * M * a.element_size()
        res['masked_GBps'] = paths.size(1) * per_path \
            / res['time']['masked_order'] / 1e9
    path_mat = torch.sparse_coo_tensor(
        paths[[2, 0]], edge_attr[paths[1], 0], (E, E)).coalesce() \
        .to_sparse_csr()
    path_mat32 = torch.sparse_csr_tensor(
        path_mat.crow_indices().int(), path_mat.col_indices().int(),
        path_mat.values(), (E, E))
    dense_in = edge_attr.contiguous()
    res['baseline']['sparse_mm_int64'] = timed(
        lambda: torch.sparse.mm(path_mat, dense_in), rep)[0]
    res['baseline']['sparse_mm'] = timed(
        lambda: torch.sparse.mm(path_mat32, dense_in), rep)[0]
    # Propagated mode against PyG propagation with the same K on the graph.
    # PyG's default gather-scatter on edge_index, and its SpMM path on a
    # CSR adjacency (transposed: rows are targets).
    from torch_geometric.nn import SGConv, TAGConv
    w = edge_attr[:, 0]
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), w, (n, n)) \
        .coalesce().to_sparse_csr()
    for name, conv in (('sgconv', SGConv(d, d, K=P, bias=False)),
                       ('tagconv', TAGConv(d, d, K=P, bias=False))):
        with torch.no_grad():
            res['baseline'][name] = M * timed(
                lambda: conv(xs[0], edge_index, w), rep)[0]
            res['baseline'][name + '_csr'] = M * timed(
                lambda: conv(xs[0], adj_t), rep)[0]
    # Memory bandwidth: a plain copy of a 256 MiB tensor, against which the
    # masked orders' bytes per second are set.
    src = torch.empty(64 * 2**20)
    dst = torch.empty_like(src)
    t_copy = timed(lambda: dst.copy_(src), 3)[0]
    res['copy_GBps'] = 2 * src.numel() * 4 / t_copy / 1e9

    res['peak_rss_pipeline'] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss * 1024
    # Whole pipeline baselines: dense and SciPy, where they fit.
    if 8.0 * M * (P + 2) * n * n <= args.dense_bytes:
        from pyg_lego import dense
        fusion_d = LEGOFusion(M, P, kind='polynomial')

        def run_dense():
            mask, r = dense.relation_graph(views, k)
            g = dense.fuse(dense.graph_powers(r, mask, P, 'masked'),
                           fusion_d)
            return g
        res['baseline']['dense_masked'] = timed(run_dense)[0]
    fill = n * (E / n)**2 * 12
    if fill <= args.dense_bytes:
        import scipy.sparse as sp
        a = a.numpy()
        r_, c_ = edge_index.numpy()
        mask = sp.csr_matrix((np.ones(E, np.float32), (r_, c_)), (n, n))

        def run_scipy():
            for m in range(M):
                A = sp.csr_matrix((a[:, m], (r_, c_)), (n, n))
                power = A
                for _ in range(2, P + 1):
                    power = (power @ A).multiply(mask).tocsr()
        res['baseline']['scipy_masked'] = timed(run_scipy)[0]
    res['peak_rss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return res


def measure_large(args) -> Dict:
    r"""The N = 1,000,000 target: approximate graph build, then per mode the
    expansion and the polynomial fusion, forward and backward, each mode's
    peak RSS taken in its own subprocess."""
    import torch
    from pyg_lego import build_relation_graph
    n = args.large_n
    views = make_views(n, args.views, args.dim)
    t = time.perf_counter()
    data = build_relation_graph(views, k=args.k, backend=args.backend,
                                progress=True, recall_sample=1000)
    res = {'N': n, 'build_s': time.perf_counter() - t, 'E': data.num_edges,
           'recall': data.knn_recall, 'knn_settings': data.knn_settings,
           'build_peak_rss': resource.getrusage(
               resource.RUSAGE_SELF).ru_maxrss * 1024}
    print(json.dumps(res), flush=True)
    torch.save({'edge_index': data.edge_index, 'edge_attr': data.edge_attr,
                **views}, args.large_cache)
    return res


def measure_large_mode(args) -> Dict:
    import torch
    from pyg_lego import LEGO
    saved = torch.load(args.large_cache)
    names = [f'view{m}' for m in range(args.views)]
    # The backward pass reaches the scores and the features (propagated
    # mode), not only the fusion coefficients.
    xs = [saved[name].requires_grad_() for name in names]
    edge_attr = saved['edge_attr'].requires_grad_()
    # The expansion and fusion that the committed large runs measured,
    # without the default top-k.
    model = LEGO(names, P=args.P, mode=args.mode, fusion='polynomial',
                 topk=None)
    model.expansion.memory_budget = args.path_budget
    t = time.perf_counter()
    fused = model(saved['edge_index'], edge_attr, xs=xs,
                  num_nodes=xs[0].size(0))
    t_fwd = time.perf_counter() - t
    fused.sum().backward()
    assert edge_attr.grad is not None
    return {'mode': args.mode, 'kernel': model.expansion.kernel,
            'forward_s': t_fwd, 'total_s': time.perf_counter() - t,
            'peak_rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            * 1024}


# ------------------------------------------------------------------ driver --

def subprocess_json(extra: List[str], timeout: float) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__)] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(xs, ys) -> float:
    lx = [math.log(x) for x, y in zip(xs, ys) if y is not None and y > 0]
    ly = [math.log(y) for y in ys if y is not None and y > 0]
    if len(lx) < 2:
        return float('nan')
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((a - mx)**2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / var


def ratio(a, b):
    return a / b if a and b else None


def summarize(results: List[Dict]) -> Dict:
    rows = []
    for r in results:
        t, b = r['time'], r['baseline']
        rows.append({
            'N': r['N'], 'E': r['E'], 'paths': r['paths'],
            'knn_backend': r['knn_backend'],
            'knn_flop_rate_vs_matmul': ratio(b.get('knn_matmul'), t['knn']),
            'kernel': r.get('kernel'),
            'masked_order_vs_sparse_mm': ratio(t.get('masked_order'),
                                               b['sparse_mm']),
            'masked_walk_order_vs_sparse_mm': ratio(
                t.get('masked_order_walk'), b['sparse_mm']),
            'masked_kernel_order_vs_sparse_mm': ratio(
                t.get('masked_order_kernel'), b['sparse_mm']),
            # Against the faster of PyG's two propagation paths.
            'propagated_vs_sgconv': ratio(t['propagated_forward'], min(
                b['sgconv'], b.get('sgconv_csr', b['sgconv']))),
            'propagated_vs_tagconv': ratio(t['propagated_forward'], min(
                b['tagconv'], b.get('tagconv_csr', b['tagconv']))),
            'unrelabelled_vs_propagated': ratio(
                t.get('propagated_forward_unrelabelled'),
                t['propagated_forward']),
            'masked_bandwidth_vs_copy': ratio(r.get('masked_GBps'),
                                              r['copy_GBps']),
            # Forward passes: ours from features (kNN, scores, masked power)
            # against dense; the masked power against SciPy's
            # (A @ A).multiply(mask).
            'masked_vs_dense': ratio(t['knn'] + t['scores'] +
                                     t['masked_forward'],
                                     b.get('dense_masked')),
            'masked_vs_scipy': ratio(t['masked_forward'],
                                     b.get('scipy_masked')),
            'recomputed_vs_reused_scores': ratio(t['scores_recomputed'],
                                                 t['scores']),
            'walk_vs_default': ratio(t['masked_walk'], t['masked']),
            'torch_stored_vs_default': ratio(t['masked_torch'], t['masked']),
            'torch_streamed_vs_default': ratio(t['masked_streamed'],
                                               t['masked']),
            'pipeline_peak_rss_GiB': r['peak_rss_pipeline'] / 2**30,
        })
    sizes = [r['N'] for r in results]
    slopes = {s: {'time': slope(sizes, [r['time'][s] for r in results]),
                  'mem': slope(sizes, [r['mem'][s] for r in results])}
              for s in STAGES}
    slopes['pipeline_peak_rss'] = {'mem': slope(
        sizes, [r['peak_rss_pipeline'] for r in results])}
    return {'rows': rows, 'slopes': slopes}


def fmt(v, digits=2):
    if v is None:
        return 'n/a'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def md_table(head: List[str], rows: List[List]) -> List[str]:
    r"""A markdown table's lines: :obj:`head`, then :obj:`rows` (cells as
    they are; :func:`fmt` them first)."""
    return ['| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|'] + \
        ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]


def summary_tables(summary: Dict, title: str) -> List[str]:
    r"""The ratio rows of :obj:`summary` under :obj:`title`, then the
    fitted slopes."""
    keys = [k for k in summary['rows'][0] if k not in ('N', 'E', 'paths')]
    return (['', f'### {title}', ''] + md_table(
        ['N'] + keys, [[row['N']] + [fmt(row[k]) for k in keys]
                       for row in summary['rows']]) +
        ['', '### Fitted log-log slopes against N', ''] + md_table(
            ['stage', 'time', 'memory'],
            [[s, fmt(v.get('time')), fmt(v.get('mem'))]
             for s, v in summary['slopes'].items()]))


def markdown(results: List[Dict], summary: Dict, meta: Dict) -> str:
    loads = ', '.join(f"{r.get('load_average', float('nan')):.1f}"
                      for r in results)
    lines = [f"Machine: {meta['machine']}; torch {meta['torch']}; "
             f"{meta['threads']} threads; k={meta['k']}, P={meta['P']}, "
             f"{meta['views']} views of width {meta['dim']}; 1-minute load "
             f"average after each size: {loads}.", '',
             '### Time (s) per stage, forward and backward', '']
    lines += md_table(['N', '|E|', '#paths', *STAGES], [
        [r['N'], r['E'], r['paths']] + [fmt(r['time'][s], 3) for s in STAGES]
        for r in results])
    lines += ['', '### Peak memory growth (MiB) per stage', '']
    lines += md_table(['N', *STAGES, 'process peak (pipeline)'], [
        [r['N']] + [fmt(None if r['mem'][s] is None else r['mem'][s] / 2**20,
                        1) for s in STAGES] +
        [fmt(r['peak_rss_pipeline'] / 2**20, 0)] for r in results])
    lines += summary_tables(
        summary, 'Ratios against baselines measured in the same process')
    return '\n'.join(lines) + '\n'


def plot(results: List[Dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = [r['N'] for r in results]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in STAGES:
        if any(r['time'][s] is None for r in results):
            continue
        ax_t.plot(sizes, [r['time'][s] for r in results], 'o-', label=s)
        ax_m.plot(sizes, [max(r['mem'][s], 1) / 2**20 for r in results],
                  'o-', label=s)
    ax_m.plot(sizes, [r['peak_rss_pipeline'] / 2**20 for r in results],
              'k--', label='process peak (pipeline)')
    for ax, title in ((ax_t, 'time (s)'), (ax_m, 'peak memory growth (MiB)')):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('N (nodes)')
        ax.set_title(title)
        ax.grid(True, which='both', alpha=0.3)
    ax_m.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', type=int, nargs='+',
                   default=[4000, 8000, 16000, 32000, 64000])
    p.add_argument('--k', type=int, default=16)
    p.add_argument('--P', type=int, default=3)
    p.add_argument('--views', type=int, default=3)
    p.add_argument('--dim', type=int, default=128)
    p.add_argument('--backend', default='auto')
    p.add_argument('--dense-bytes', type=float, default=4 * 2**30,
                   help='run the dense and SciPy baselines while their '
                        'estimated memory stays below this')
    p.add_argument('--out', default=os.path.join(HERE, 'results'))
    p.add_argument('--progress', action='store_true')
    p.add_argument('--large', action='store_true',
                   help='the N = 1,000,000 target run (long)')
    p.add_argument('--large-n', type=int, default=1_000_000)
    p.add_argument('--large-cache', default='/tmp/pyg_lego_large_graph.pt')
    p.add_argument('--path-budget', type=int, default=2 * 2**30)
    p.add_argument('--worker', type=int, help=argparse.SUPPRESS)
    p.add_argument('--worker-large', action='store_true',
                   help=argparse.SUPPRESS)
    p.add_argument('--mode', help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(measure_size(args.worker, args)))
        return
    if args.worker_large:
        print(json.dumps(measure_large_mode(args) if args.mode
                         else measure_large(args)))
        return

    import torch
    os.makedirs(args.out, exist_ok=True)
    meta = {'machine': f'{platform.processor() or platform.machine()}, '
                       f'{os.cpu_count()} cores ({platform.node()})',
            'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'k': args.k, 'P': args.P, 'views': args.views, 'dim': args.dim}
    common = ['--k', str(args.k), '--P', str(args.P), '--views',
              str(args.views), '--dim', str(args.dim), '--backend',
              args.backend]
    if args.large:
        out = {'meta': meta}
        out['build'] = subprocess_json(common + ['--worker-large',
                                                 '--large-n',
                                                 str(args.large_n),
                                                 '--large-cache',
                                                 args.large_cache], 7200)
        print(out['build'], flush=True)
        for mode in ('elementwise', 'propagated', 'masked'):
            out[mode] = subprocess_json(
                common + ['--worker-large', '--mode', mode, '--large-cache',
                          args.large_cache, '--path-budget',
                          str(args.path_budget)], 7200)
            print(out[mode], flush=True)
        # Other jobs on a shared machine slow every stage: record the load.
        out['load_average_end'] = os.getloadavg()[0]
        with open(os.path.join(args.out, 'large.json'), 'w') as f:
            json.dump(out, f, indent=1)
        return

    results = []
    for n in args.sizes:
        t = time.perf_counter()
        r = subprocess_json(common + ['--worker', str(n), '--dense-bytes',
                                      str(args.dense_bytes)], 3600)
        # Other jobs on a shared machine slow every stage: record the load.
        r['load_average'] = os.getloadavg()[0]
        results.append(r)
        print(f"N={n}: {time.perf_counter() - t:.1f}s, E={r['E']}, "
              f"paths={r['paths']}", flush=True)
    summary = summarize(results)
    with open(os.path.join(args.out, 'scale.json'), 'w') as f:
        json.dump({'meta': meta, 'results': results, 'summary': summary}, f,
                  indent=1)
    md = markdown(results, summary, meta)
    with open(os.path.join(args.out, 'scale.md'), 'w') as f:
        f.write(md)
    plot(results, os.path.join(args.out, 'scale.png'))
    print(md)


if __name__ == '__main__':
    main()
