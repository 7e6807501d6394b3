r"""The cost of LEGO's top-k sparsification (:class:`~pyg_lego.nn.TopKSparsify`)
against the fusion it follows, forward and backward, on one synthetic pattern
per size (each node's ``--degree`` random neighbours, made symmetric, with
self-loops; ``--views`` views, orders 0..``--P``), in one process, so that
the ratio holds on a shared machine.

    python benchmarks/sparsify.py --out results/sparsify

writes ``sparsify.json`` and ``sparsify.md``.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import timed  # noqa: E402

from pyg_lego.nn import LEGOFusion, TopKSparsify  # noqa: E402
from pyg_lego.nn.lego import DEFAULT_TOPK  # noqa: E402


def random_pattern(n: int, degree: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    row = torch.arange(n).repeat_interleave(degree)
    col = torch.randint(0, n, (n * degree, ), generator=gen)
    loop = torch.arange(n)
    key = torch.cat([row * n + col, col * n + row, loop * n + loop]).unique()
    return torch.stack([key // n, key % n])


def measure(n: int, degree: int, views: int, P: int, k: int,
            repeat: int) -> dict:
    edge_index = random_pattern(n, degree)
    e = edge_index.size(1)
    gen = torch.Generator().manual_seed(1)
    powers = torch.rand(e, views, P + 1, generator=gen).requires_grad_()
    fusion = LEGOFusion(views, P, kind='linear')
    sparsify = TopKSparsify(k)

    def fuse():
        fusion(powers).sum().backward()
    fused = fusion(powers).detach().requires_grad_()

    def top():
        sparsify(edge_index, fused, n).sum().backward()
    res = {'N': n, 'edges': e, 'edges_per_node': e / n, 'k': k}
    res['fusion_s'], res['fusion_bytes'], _ = timed(fuse, repeat)
    res['topk_s'], res['topk_bytes'], _ = timed(top, repeat)
    res['time_ratio'] = res['topk_s'] / res['fusion_s']
    return res


def to_markdown(result: dict) -> str:
    lines = [f"Top-k (k = {result['k']}) against the linear fusion of "
             f"{result['views']} views, P = {result['P']}, forward and "
             f"backward, best of {result['repeat']}, "
             f"{result['threads']} thread(s):", '',
             '| N | edges | fusion (s) | top-k (s) | top-k / fusion | '
             'fusion peak RSS (MB) | top-k peak RSS (MB) |',
             '|---|---|---|---|---|---|---|']
    for r in result['rows']:
        lines.append(f"| {r['N']:,} | {r['edges']:,} | {r['fusion_s']:.3f} | "
                     f"{r['topk_s']:.3f} | {r['time_ratio']:.2f} | "
                     f"{r['fusion_bytes'] / 2**20:.0f} | "
                     f"{r['topk_bytes'] / 2**20:.0f} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[10_000, 100_000, 1_000_000])
    parser.add_argument('--degree', type=int, default=20)
    parser.add_argument('--views', type=int, default=3)
    parser.add_argument('--P', type=int, default=2)
    parser.add_argument('--k', type=int, default=DEFAULT_TOPK)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', default='results/sparsify')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(n, args.degree, args.views, args.P, args.k, args.repeat)
            for n in args.sizes]
    result = {'views': args.views, 'P': args.P, 'k': args.k,
              'degree': args.degree, 'repeat': args.repeat,
              'threads': torch.get_num_threads(), 'rows': rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'sparsify.json'), 'w') as f:
        json.dump(result, f, indent=1)
    text = to_markdown(result)
    with open(os.path.join(args.out, 'sparsify.md'), 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    main()
