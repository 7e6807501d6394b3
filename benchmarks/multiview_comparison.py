r"""Reproduces the README's multi-view comparison: LEGO's fused graph against
MLP, label propagation and the usual GNNs on scikit-learn's digits (three
views), the same with a noise view and a corrupted view added, and a
multiplex stochastic block model whose edge types are given graphs.

    python benchmarks/multiview_comparison.py --out results/multiview

writes ``multiview.json`` (every run) and ``multiview.md`` (the tables).
``--small`` (or ``PYG_LEGO_SMALL=1``) runs a quick setting.
"""
import argparse
import json
import os

import torch

from pyg_lego.multiview.suites import (SUITES, report_markdown, run_suite,
                                       small_setting)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='results/multiview')
    parser.add_argument('--suites', nargs='+', default=list(SUITES),
                        choices=SUITES)
    parser.add_argument('--small', action='store_true',
                        help='quick setting (also PYG_LEGO_SMALL=1)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (1 is steadiest on a shared '
                        'machine)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    small = args.small or small_setting()
    os.makedirs(args.out, exist_ok=True)
    results = []
    for suite in args.suites:
        results.append(run_suite(suite, small=small))
        print(f"{suite}: {results[-1]['seconds']:.0f} s", flush=True)
    with open(os.path.join(args.out, 'multiview.json'), 'w') as f:
        json.dump(results, f, indent=1)
    report = report_markdown(results)
    with open(os.path.join(args.out, 'multiview.md'), 'w') as f:
        f.write(report)
    print(report)


if __name__ == '__main__':
    main()
