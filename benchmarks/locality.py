r"""Node orders for memory locality, in one process: the kNN graph as numbered
(``input``), in reverse Cuthill-McKee order (SciPy, ``rcm``), and in
``pyg_lego.nn.locality.locality_order`` (``locality``, what the library
relabels with), each timed on the passes that gather rows at random, in
interleaved rounds.

    python benchmarks/locality.py                 # N = 16000 and 64000
    python benchmarks/locality.py --sizes 4000
    python benchmarks/locality.py --graph /tmp/pyg_lego_large_graph.pt
                                  # the graph that scale.py --large saved

The graph is the one ``scale.py`` measures (its views, k = 16, 3 views of
width 128, exact kNN). Per order: the time to compute it, the median span
``|i - j|`` of an edge and the share of edges that span more than 2048
labels, and the median over rounds of the time of a CSR product with 128
columns (the propagated mode's product), and, with numba, of one order of
the masked power by the walks and from a stored path index (0.9 GB at
N = 1M, 2 bytes per path). Results go to
``<out>/locality.json`` and ``<out>/locality.md`` (``locality_large.*``
with ``--graph``).
"""
import argparse
import json
import os
import platform
import sys
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ORDERS = ('input', 'rcm', 'locality')
FAR = 2048


def rcm_order(edge_index, num_nodes: int):
    import numpy as np
    import scipy.sparse as sp
    import torch
    from scipy.sparse.csgraph import reverse_cuthill_mckee
    row, col = edge_index.numpy()
    adj = sp.csr_matrix((np.ones(row.size, dtype=np.int8), (row, col)),
                        shape=(num_nodes, num_nodes))
    return torch.from_numpy(reverse_cuthill_mckee(
        adj, symmetric_mode=False).astype(np.int64))


def runs(edge_index, num_nodes: int, weight, x, masked_numba):
    r"""The timed passes over one numbering, as zero-argument calls that
    return their output (rows in this numbering)."""
    import numpy as np
    from pyg_lego.data.similarity import CSRPattern
    adj = CSRPattern(edge_index[0], edge_index[1], num_nodes,
                     num_nodes).matrix(weight[:, 0].contiguous())
    out = {'spmm': lambda: (adj @ x).numpy()}
    if masked_numba.available():
        pattern = masked_numba.Pattern(edge_index, num_nodes, reorder=False)
        a = weight.numpy()
        rowptr, col = pattern.numpy('rowptr', 'col')
        walk = masked_numba._kernels().row

        def masked_walk():
            power = np.zeros_like(a)
            masked_numba._call(walk, rowptr, col, a, a, power, num_nodes,
                               pattern.num_chunks)
            return power
        out['masked_walk'] = masked_walk
        stored = masked_numba.StoredPaths.enumerate(pattern)
        forward = masked_numba._path_kernels(a.shape[1])[0]

        def masked_paths():
            power = np.zeros_like(a)
            masked_numba._call(forward, rowptr, col, stored.ptr,
                               stored.pairs, a, a, power,
                               pattern.num_chunks)
            return power
        out['masked_paths'] = masked_paths
    return out


def measure(n: int, rounds: int, graph: Optional[str] = None) -> dict:
    r"""One graph: built as ``scale.py`` builds it at :obj:`n` nodes, or
    the one saved at :obj:`graph`."""
    import numpy as np
    import torch
    from pyg_lego.nn import locality, masked_numba, relation_norm
    from pyg_lego.nn.locality import Relabel
    if graph is None:
        sys.path.insert(0, HERE)
        from scale import make_views
        from pyg_lego import build_relation_graph
        torch.manual_seed(0)
        data = build_relation_graph(make_views(n, 3, 128), k=16,
                                    backend='exact')
        ei, edge_attr = data.edge_index, data.edge_attr
    else:
        saved = torch.load(graph)
        ei, edge_attr = saved['edge_index'], saved['edge_attr']
        n = saved['view0'].size(0)
        del saved
    a = relation_norm(ei, edge_attr, n)
    finders = {'input': lambda: torch.arange(n),
               'rcm': lambda: rcm_order(ei, n),
               'locality': lambda: locality.locality_order(ei, n)}
    res = {'N': n, 'E': int(ei.size(1)), 'order_s': {}, 'median_span': {},
           'far_share': {}}
    x = torch.randn(n, 128, generator=torch.Generator().manual_seed(0))
    calls, inputs = {}, {}
    for name in ORDERS:
        t = time.perf_counter()
        order = finders[name]()
        res['order_s'][name] = time.perf_counter() - t
        relabel = Relabel(ei, n, order)
        pattern = relabel.edge_index
        span = (pattern[0] - pattern[1]).abs()
        res['median_span'][name] = float(span.float().median())
        res['far_share'][name] = float((span > FAR).float().mean())
        # The same values on every numbering: a node keeps its features,
        # an edge its weights.
        edge_perm = relabel.edge_perm.long()
        calls[name] = runs(pattern, n, a[edge_perm].contiguous(), x[order],
                           masked_numba)
        inputs[name] = {'node': order.numpy(), 'edge': edge_perm.numpy()}
    passes = list(calls['input'])
    # Compiles, touches memory first, and checks that each numbering gives
    # the same values: the input numbering's, at the input node and edge of
    # every row.
    reference = {}
    for name in ORDERS:
        for p, run in calls[name].items():
            out = run()
            if name == 'input':
                reference[p] = out
            at = inputs[name]['node' if p == 'spmm' else 'edge']
            assert np.allclose(reference[p][at], out, rtol=1e-4,
                               atol=1e-6), (name, p)
    samples = {name: {p: [] for p in passes} for name in ORDERS}
    for _ in range(rounds):
        for name in ORDERS:
            for p, run in calls[name].items():
                t = time.perf_counter()
                run()
                samples[name][p].append(time.perf_counter() - t)
    res['time_s'] = {name: {p: float(np.median(v)) for p, v in s.items()}
                     for name, s in samples.items()}
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[16000, 64000])
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--graph', help='a graph saved by scale.py --large, in '
                                   'place of --sizes')
    p.add_argument('--out', default=os.path.join(HERE, 'results'))
    args = p.parse_args()
    import torch
    results = [measure(0, args.rounds, args.graph)] if args.graph else \
        [measure(n, args.rounds) for n in args.sizes]
    meta = {'machine': f'{platform.machine()}, {os.cpu_count()} cores',
            'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'rounds': args.rounds, 'far': FAR, 'graph': args.graph}
    os.makedirs(args.out, exist_ok=True)
    stem = 'locality_large' if args.graph else 'locality'
    with open(os.path.join(args.out, stem + '.json'), 'w') as f:
        json.dump({'meta': meta, 'results': results}, f, indent=1)
    md = markdown(meta, results)
    with open(os.path.join(args.out, stem + '.md'), 'w') as f:
        f.write(md)
    print(md)


def markdown(meta: dict, results: list) -> str:
    passes = list(results[0]['time_s']['input'])
    lines = ['| N | order | computed in (s) | median span | share > '
             f'{FAR} | ' + ' | '.join(f'{p} (ms)' for p in passes) + ' |',
             '|---|---|---|---|---|' + '---|' * len(passes)]
    for r in results:
        for name in ORDERS:
            lines.append(
                f"| {r['N']} | {name} | {r['order_s'][name]:.3f} | "
                f"{r['median_span'][name]:.0f} | "
                f"{r['far_share'][name]:.3f} | " + ' | '.join(
                    f"{1e3 * r['time_s'][name][p]:.1f}" for p in passes)
                + ' |')
    return ('Node orders of the kNN graph, each pass timed on it (median of '
            f"{meta['rounds']} interleaved rounds; {meta['machine']}, "
            f"{meta['threads']} threads)\n\n" + '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
