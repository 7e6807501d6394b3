r"""The software prefetch of the numba masked-power kernels, on and off, in one
process: every compiled pass that gathers rows at random, timed with the
hint and without it on the same graph and inputs, in interleaved rounds.

    python benchmarks/prefetch.py                 # N = 16000 and 64000
    python benchmarks/prefetch.py --sizes 4000
    python benchmarks/prefetch.py --path-ahead 4 --walk-ahead 4   # other hints

The graph is the one ``scale.py`` measures (its views, k = 16, 3 views of
width 128, exact kNN). Results go to ``<out>/prefetch.json`` and
``<out>/prefetch.md``: per kernel, the median over rounds of the time with
the hint over the time without it (below 1: the hint helps).
"""
import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
#: stored-path passes (``_path_kernels``), walks and the edge-order gather
#: (``_kernels``).
KERNELS = ('path_forward', 'path_carry', 'path_weight', 'walk_forward',
           'walk_carry', 'walk_weight', 'gather')


def passes(masked_numba, pattern, stored, a, grad, perm, hint: bool):
    r"""One timed call of every kernel, with or without the hint."""
    import numpy as np
    call = masked_numba._call
    forward, carry, weight = masked_numba._path_kernels(a.shape[1], hint)
    kernels = masked_numba._kernels(hint)
    rowptr, col, t_rowptr, t_src, t_edge = pattern.numpy(
        'rowptr', 'col', 't_rowptr', 't_src', 't_edge')
    index = (stored.ptr, stored.pairs)
    chunks = (pattern.num_nodes, pattern.num_chunks)
    runs = {
        'path_forward': lambda o: call(forward, rowptr, col, *index, a, a, o,
                                       pattern.num_chunks),
        'path_carry': lambda o: call(carry, rowptr, col, *index, grad, a, o,
                                     pattern.num_chunks),
        'path_weight': lambda o: call(
            weight, rowptr, t_rowptr, t_src, t_edge, *stored.bounds(pattern),
            stored.pairs, grad, a, o, pattern.num_chunks),
        'walk_forward': lambda o: call(kernels.row, rowptr, col, a, a, o,
                                       *chunks),
        'walk_carry': lambda o: call(kernels.carry, rowptr, col, grad, a, o,
                                     *chunks),
        'walk_weight': lambda o: call(kernels.weight, rowptr, col, t_rowptr,
                                      t_src, t_edge, grad, a, o, *chunks),
        'gather': lambda o: call(kernels.gather, a, perm, o),
    }
    times, outs = {}, {}
    for name in KERNELS:
        out = np.zeros_like(a)
        t = time.perf_counter()
        runs[name](out)
        times[name] = time.perf_counter() - t
        outs[name] = out
    return times, outs


def measure(n: int, rounds: int) -> dict:
    import numpy as np
    import torch
    sys.path.insert(0, HERE)
    from scale import make_views
    from pyg_lego import build_relation_graph
    from pyg_lego.nn import masked_numba, relation_norm
    torch.manual_seed(0)
    data = build_relation_graph(make_views(n, 3, 128), k=16,
                                backend='exact')
    a = relation_norm(data.edge_index, data.edge_attr, n).contiguous()
    pattern = masked_numba.Pattern(data.edge_index, n)
    stored = masked_numba.StoredPaths.enumerate(pattern)
    a = pattern.to_pattern(a).numpy()
    grad = np.random.default_rng(1).random(a.shape, dtype=a.dtype)
    perm = np.random.default_rng(0).permutation(a.shape[0])
    # Compile both, and check that the hint changes no result.
    _, plain = passes(masked_numba, pattern, stored, a, grad, perm,
                      False)
    _, hinted = passes(masked_numba, pattern, stored, a, grad, perm,
                       True)
    assert all(np.array_equal(plain[k], hinted[k]) for k in KERNELS)
    samples = {True: [], False: []}
    for _ in range(rounds):
        for hint in (False, True):
            times, _ = passes(masked_numba, pattern, stored, a, grad,
                              perm, hint)
            samples[hint].append([times[k] for k in KERNELS])
    on, off = np.array(samples[True]), np.array(samples[False])
    ratio = np.median(on / off, axis=0)
    return {'N': n, 'E': int(data.num_edges),
            'paths': stored.num_paths,
            'hint_compiled': masked_numba.numba_runtime.prefetch() is not None,
            'plain_s': dict(zip(KERNELS, np.median(off, 0).tolist())),
            'hint_s': dict(zip(KERNELS, np.median(on, 0).tolist())),
            'hint_vs_plain': dict(zip(KERNELS, ratio.tolist()))}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[16000, 64000])
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--distance', type=int,
                   help='rows ahead that the gather between edge orders '
                        'prefetches (default: PREFETCH_DISTANCE)')
    p.add_argument('--path-ahead', type=int,
                   help='first edges ahead that the stored-path passes '
                        'prefetch (default: PATH_AHEAD)')
    p.add_argument('--walk-ahead', type=int,
                   help='neighbours ahead that the walks prefetch (default: '
                        'WALK_AHEAD)')
    p.add_argument('--out', default=os.path.join(HERE, 'results'))
    args = p.parse_args()
    import torch
    from pyg_lego.nn import masked_numba
    # Before any kernel is compiled: numba freezes the globals it reads.
    if args.distance is not None:
        masked_numba.PREFETCH_DISTANCE = args.distance
    if args.walk_ahead is not None:
        masked_numba.WALK_AHEAD = args.walk_ahead
    if args.path_ahead is not None:
        masked_numba.PATH_AHEAD = args.path_ahead
    results = [measure(n, args.rounds) for n in args.sizes]
    meta = {'machine': f'{platform.machine()}, {os.cpu_count()} cores',
            'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'rounds': args.rounds,
            'prefetch_distance': masked_numba.PREFETCH_DISTANCE,
            'path_ahead': masked_numba.PATH_AHEAD,
            'walk_ahead': masked_numba.WALK_AHEAD}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'prefetch.json'), 'w') as f:
        json.dump({'meta': meta, 'results': results}, f, indent=1)
    lines = ['| N | paths | ' + ' | '.join(KERNELS) + ' |',
             '|---|---|' + '---|' * len(KERNELS)]
    for r in results:
        lines.append(f"| {r['N']} | {r['paths']} | " + ' | '.join(
            f"{r['hint_vs_plain'][k]:.2f}" for k in KERNELS) + ' |')
    md = ('Time with the prefetch hint / without it (median of '
          f"{args.rounds} interleaved rounds; {meta['machine']}, "
          f"{meta['threads']} threads)\n\n" + '\n'.join(lines) + '\n')
    with open(os.path.join(args.out, 'prefetch.md'), 'w') as f:
        f.write(md)
    print(md)


if __name__ == '__main__':
    main()
