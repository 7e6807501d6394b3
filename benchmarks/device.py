r"""The sparse LEGO pipeline on one device (CUDA by default): per size, every
stage's time and peak memory, with baselines measured in the same process,
and the whole pipeline per expansion mode (graph build, expansion,
polynomial fusion, forward and backward), the form of the issue's
N = 10,000,000 target on one GPU.

    python benchmarks/device.py                         # CUDA, default sizes
    python benchmarks/device.py --sizes 10000000 --pipeline-only
    python benchmarks/device.py --device cpu --sizes 2000 4000

One process runs every size, smallest first (the device is set up once);
a size is skipped when the one before it, scaled by
:math:`(N / N_{\mathrm{before}})^2` where the kNN search is exact (it is
quadratic), else by :math:`(N / N_{\mathrm{before}})^{1.15}`, would exceed
``--budget-s``. ``--pipeline-only`` runs the whole pipeline per mode alone
(the form of the time target). On CUDA, every timed stage ends with a
synchronisation, and its memory is the growth of the peak that torch's
allocator saw (``torch.cuda.max_memory_allocated``) over what was
allocated when it started; on the CPU it is the sampled resident set, as
in ``scale.py``. Results go to ``<out>/device.json`` and
``<out>/device.md``, with the device's name, after every size and every
mode of the whole pipeline, so that a run stopped at a time limit or out
of memory keeps what it finished.

Data: those of ``scale.py`` (``M`` views that are linear maps of a shared
clustered latent plus noise), drawn on the device.
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scale import (fmt, make_views, md_table, ratio,  # noqa: E402
                   release_freed_memory, slope, summary_tables, timed)

#: Stages timed at every size (``paths``: the stored two-step-path index;
#: ``masked_streamed``: the masked power with memory budget 0).
STAGES = ('knn', 'scores', 'paths', 'elementwise', 'masked',
          'masked_streamed', 'propagated', 'fusion')
MODES = ('elementwise', 'masked', 'propagated')


class Timer:
    r"""Best wall time of several runs of a function on one device, with
    the peak memory growth of the last run (see the module's docstring):
    on the CPU, ``scale.timed``."""

    def __init__(self, device):
        import torch
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'

    def sync(self) -> None:
        if self.cuda:
            import torch
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable, repeat: int = 1):
        if not self.cuda:
            return timed(fn, repeat)
        import torch
        best, out = math.inf, None
        for _ in range(repeat):
            out = None  # freed before the next run starts
            release_freed_memory()
            torch.cuda.empty_cache()
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            start = torch.cuda.memory_allocated(self.device)
            t = time.perf_counter()
            out = fn()
            self.sync()
            best = min(best, time.perf_counter() - t)
        return best, torch.cuda.max_memory_allocated(self.device) - start, \
            out


def measure_size(n: int, args, timer: Timer,
                 save: Callable[[Dict], None]) -> Dict:
    r"""One size: every stage and its baselines (unless
    :obj:`args.pipeline_only`), then the whole pipeline per mode;
    :obj:`save` is given the partial result after the stages and after
    each mode."""
    views = make_views(n, args.views, args.dim, device=timer.device)
    res: Dict = {'N': n, 'P': args.P, 'time': {}, 'mem': {},
                 'baseline': {}, 'E': None, 'paths': None,
                 'knn_backend': resolved_backend(n, args, timer.device),
                 'pipeline': {}}
    if not args.pipeline_only:
        measure_stages(res, views, args, timer)
        save(res)
    measure_pipeline(res, views, args, timer, save)
    return res


def resolved_backend(n: int, args, device) -> str:
    r"""The kNN backend that :obj:`args.backend` means at :obj:`n` nodes."""
    from pyg_lego.data.backends import choose_backend
    return args.backend if args.backend != 'auto' else \
        choose_backend(n, args.dim, device)


def estimate_s(before: Tuple[int, float], n: int, args, device) -> float:
    r"""The time of size :obj:`n` from that of the size before it: the
    exact kNN grows with :math:`N^2`; the approximate searches and every
    other stage about linearly (with exponent 1.15, the slope the issue
    allows)."""
    power = 2.0 if resolved_backend(n, args, device) == 'exact' else 1.15
    return before[1] * (n / before[0])**power


def measure_stages(res: Dict, views: Dict, args, timer: Timer) -> None:
    import torch
    from torch_geometric.nn import SGConv
    from pyg_lego.data.backends import knn_search
    from pyg_lego.data.knn import block_rows
    from pyg_lego.data.relation import _scores, union_pattern
    from pyg_lego.data.similarity import prepare, resolve_score_map
    from pyg_lego.nn import GraphPowerConv, LEGOFusion, relation_norm, \
        two_hop_paths

    device, rep = timer.device, args.repeat
    n, k, P, M, d = res['N'], args.k, args.P, args.views, args.dim
    xs = list(views.values())

    t, mem, found = timer(lambda: {
        name: knn_search(x, k, backend=args.backend)
        for name, x in views.items()}, rep)
    res['time']['knn'], res['mem']['knn'] = t, mem
    res['knn_backend'] = next(iter(found.values())).backend
    if res['knn_backend'] == 'exact':
        zs = [prepare(x, 'cosine') for x in xs]
        rows = block_rows(n, 4, device=device)

        def matmuls():
            for z in zs:
                for s in range(0, n, rows):
                    z[s:s + rows] @ z.t()
        res['baseline']['knn_matmul'] = timer(matmuls, rep)[0]

    smap = resolve_score_map('auto', 'cosine')

    def scores():
        edge_index, known, reverse = union_pattern(views, found, True, n,
                                                   device)
        return edge_index, _scores(views, edge_index, 'cosine', smap, None,
                                   n, known, reverse)
    t, mem, (edge_index, edge_attr) = timer(scores, rep)
    res['time']['scores'], res['mem']['scores'] = t, mem
    E = res['E'] = edge_index.size(1)
    del found

    t, mem, paths = timer(lambda: two_hop_paths(
        edge_index, n, max_paths=args.path_budget // 24), rep)
    res['time']['paths'], res['mem']['paths'] = t, mem
    res['paths'] = None if paths is None else paths.size(1)

    def expansion(mode, **kw):
        conv = GraphPowerConv(P, mode=mode, **kw)

        def run():
            attr = edge_attr.clone().requires_grad_(True)
            x_in = [x.clone().requires_grad_(True) for x in xs]
            out = conv(edge_index, attr, xs=x_in, num_nodes=n)
            out.sum().backward()
            return out.detach()
        return run
    for name, mode, kw in (
            ('elementwise', 'elementwise', {}),
            ('masked', 'masked', {'memory_budget': args.path_budget}),
            ('masked_streamed', 'masked', {'memory_budget': 0}),
            ('propagated', 'propagated', {})):
        t, mem, powers = timer(expansion(mode, **kw), rep)
        res['time'][name], res['mem'][name] = t, mem
    fusion = LEGOFusion(M, P, kind='polynomial').to(device)
    powers = powers.requires_grad_(True)

    def fuse():
        fusion(powers).sum().backward()
    t, mem, _ = timer(fuse, rep)
    res['time']['fusion'], res['mem']['fusion'] = t, mem
    del powers

    # Baselines. The masked power per order against torch.sparse.mm of the
    # path matrix (one non-zero per path, M columns); the propagated
    # forward against PyG's SGConv propagation with the same K; a plain
    # copy of 256 MiB for the bandwidth.
    masked_conv = GraphPowerConv(P, mode='masked',
                                 memory_budget=args.path_budget)
    res['time']['masked_forward'] = timer(lambda: masked_conv(
        edge_index, edge_attr, num_nodes=n), rep)[0]
    prop_conv = GraphPowerConv(P, mode='propagated')
    res['time']['propagated_forward'] = timer(lambda: prop_conv(
        edge_index, edge_attr, xs=xs, num_nodes=n), rep)[0]
    if paths is not None:
        a = relation_norm(edge_index, edge_attr, n).contiguous()
        path_mat = torch.sparse_coo_tensor(
            paths[[2, 0]], a[paths[1], 0], (E, E),
            check_invariants=False).coalesce().to_sparse_csr()
        del paths
        res['baseline']['sparse_mm'] = timer(
            lambda: torch.sparse.mm(path_mat, a), rep)[0]
        del path_mat
    sgconv = SGConv(d, d, K=P, bias=False).to(device)
    with torch.no_grad():
        res['baseline']['sgconv'] = M * timer(
            lambda: sgconv(xs[0], edge_index, edge_attr[:, 0]), rep)[0]
    src = torch.empty(64 * 2**20, device=device)
    dst = torch.empty_like(src)
    res['copy_GBps'] = 2 * src.numel() * 4 / timer(
        lambda: dst.copy_(src), 3)[0] / 1e9
    del src, dst


def measure_pipeline(res: Dict, views: Dict, args, timer: Timer,
                     save: Callable[[Dict], None]) -> None:
    r"""The whole pipeline per mode, as the library runs it: the graph
    build (kNN, pattern and scores), then the LEGO model, forward and
    backward; each run once."""
    from pyg_lego import LEGO, build_relation_graph
    n, xs = res['N'], list(views.values())
    res['build_s'], res['mem']['build'], data = timer(
        lambda: build_relation_graph(views, k=args.k, backend=args.backend,
                                     recall_sample=0))
    res['time']['build'] = res['build_s']
    res['E'] = res['E'] or data.num_edges
    for mode in MODES:
        model = LEGO(list(views), P=args.P, mode=mode).to(timer.device)
        model.expansion.memory_budget = args.path_budget

        def run():
            attr = data.edge_attr.clone().requires_grad_(True)
            model(data.edge_index, attr, xs=xs, num_nodes=n).sum().backward()
        t, mem, _ = timer(run)
        res['pipeline'][mode] = {'s': res['build_s'] + t, 'expansion_s': t,
                                 'mem': mem}
        print(f"N={n} pipeline {mode}: {res['pipeline'][mode]['s']:.1f} s",
              flush=True)
        save(res)


def summarize(results: List[Dict]) -> Dict:
    rows = []
    for r in results:
        t, b = r['time'], r['baseline']
        masked = t.get('masked_forward')
        rows.append({
            'N': r['N'], 'E': r['E'], 'paths': r['paths'],
            'knn_backend': r['knn_backend'],
            'knn_flop_rate_vs_matmul': ratio(b.get('knn_matmul'),
                                             t.get('knn')),
            'masked_forward_order_vs_sparse_mm': ratio(
                masked and masked / max(1, r['P'] - 1), b.get('sparse_mm')),
            'propagated_vs_sgconv': ratio(t.get('propagated_forward'),
                                          b.get('sgconv')),
            **{f'pipeline_{m}_s': r['pipeline'].get(m, {}).get('s')
               for m in MODES},
        })
    sizes = [r['N'] for r in results]
    slopes = {s: {'time': slope(sizes, [r['time'].get(s) for r in results]),
                  'mem': slope(sizes, [r['mem'].get(s) for r in results])}
              for s in (*STAGES, 'build')}
    return {'rows': rows, 'slopes': slopes}


def mib(nbytes):
    return None if nbytes is None else nbytes / 2**20


def markdown(results: List[Dict], summary: Dict, meta: Dict) -> str:
    lines = [f"Device: {meta['device_name']}; torch {meta['torch']}; "
             f"k={meta['k']}, P={meta['P']}, {meta['views']} views of width "
             f"{meta['dim']}; sizes skipped for the time budget: "
             f"{meta['skipped'] or 'none'}.", '',
             '### Time (s) per stage, forward and backward', '']
    stages = (*STAGES, 'build')
    lines += md_table(['N', '|E|', '#paths', *stages], [
        [r['N'], r['E'], fmt(r['paths'])] +
        [fmt(r['time'].get(s), 3) for s in stages] for r in results])
    lines += ['', '### Peak memory growth (MiB) per stage', '']
    lines += md_table(['N', *stages], [
        [r['N']] + [fmt(mib(r['mem'].get(s)), 1) for s in stages]
        for r in results])
    lines += summary_tables(summary, 'Ratios against baselines, and the '
                            'whole pipeline per mode (build + expansion + '
                            'fusion, s)')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--sizes', type=int, nargs='+',
                   default=[100_000, 300_000, 1_000_000])
    p.add_argument('--k', type=int, default=16)
    p.add_argument('--P', type=int, default=3)
    p.add_argument('--views', type=int, default=3)
    p.add_argument('--dim', type=int, default=128)
    p.add_argument('--backend', default='auto')
    p.add_argument('--repeat', type=int, default=2,
                   help='runs per stage, the best kept (the first compiles '
                        'and warms up)')
    p.add_argument('--path-budget', type=int, default=8 * 2**30,
                   help='bytes for the stored path index; beyond it the '
                        'masked power streams')
    p.add_argument('--budget-s', type=float, default=480.0,
                   help='skip a size whose estimated time exceeds this')
    p.add_argument('--pipeline-only', action='store_true',
                   help='only the whole pipeline per mode (the form of the '
                        'time target), not every stage and its baselines')
    p.add_argument('--out', default=os.path.join(HERE, 'results'))
    args = p.parse_args(argv)

    import torch
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch sees no CUDA device here "
                f"(use --device cpu)")
    timer = Timer(args.device)
    name = (torch.cuda.get_device_name(timer.device) if timer.cuda else
            f'{platform.machine()} CPU, {torch.get_num_threads()} threads')
    meta = {'device': str(timer.device), 'device_name': name,
            'torch': torch.__version__, 'k': args.k, 'P': args.P,
            'views': args.views, 'dim': args.dim, 'skipped': [],
            'path_budget': args.path_budget,
            'pipeline_only': args.pipeline_only}
    results, before = [], None
    os.makedirs(args.out, exist_ok=True)
    for n in sorted(args.sizes):
        if before is not None:
            estimate = estimate_s(before, n, args, timer.device)
            if estimate > args.budget_s:
                meta['skipped'].append(f'{n} (estimated {estimate:.0f} s)')
                continue
        t, partial = time.perf_counter(), []

        def save(res: Dict) -> None:
            partial[:] = [res]
            write(args.out, results + partial, meta)
        try:
            res = measure_size(n, args, timer, save)
        except torch.cuda.OutOfMemoryError as e:
            # The sizes before it stand, and the modes of this one that
            # finished; the larger ones would not fit.
            meta['skipped'].append(f'{n} (out of memory: {str(e)[:200]})')
            results += partial
            break
        results.append(res)
        before = (n, time.perf_counter() - t)
        print(f'N={n}: {before[1]:.1f}s, E={res["E"]}', flush=True)
        # Written after every size, so that a run stopped at its time
        # limit keeps the sizes it finished.
        write(args.out, results, meta)
    if not results:
        p.error(f'no size finished: {meta["skipped"]}')
    print(write(args.out, results, meta))


def write(out: str, results: List[Dict], meta: Dict) -> str:
    summary = summarize(results)
    with open(os.path.join(out, 'device.json'), 'w') as f:
        json.dump({'meta': meta, 'results': results, 'summary': summary}, f,
                  indent=1)
    text = markdown(results, summary, meta)
    with open(os.path.join(out, 'device.md'), 'w') as f:
        f.write(text)
    return text


if __name__ == '__main__':
    main()
