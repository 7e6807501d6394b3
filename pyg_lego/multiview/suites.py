r"""The three experiments of the multi-view comparison (the README table,
robustness to a noise view and a corrupted view, fusing given graphs), each
in a full and a small setting, and their markdown report. The benchmark
script and the notebooks both run them from here."""
import os
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional

import torch

from pyg_lego.multiview.datasets import (MultiViewData, digits_views,
                                         multiplex_sbm, with_corrupted_views)
from pyg_lego.multiview.experiment import (Method, default_methods,
                                           mean_shares, run_benchmark,
                                           summarize, to_markdown)

SUITES = ('comparison', 'robustness', 'given_graphs')

#: Protocol of each setting: data size, label rates, seeds, tuning budget.
SETTINGS: Dict[str, Dict[str, Any]] = {
    'full': dict(num_nodes=1000, label_rates=(2, 5, 10), robust_rate=5,
                 seeds=(0, 1, 2, 3, 4), budget=4, epochs=200, patience=30,
                 sbm_nodes=600),
    'small': dict(num_nodes=300, label_rates=(5, ), robust_rate=5,
                  seeds=(0, 1), budget=1, epochs=60, patience=20,
                  sbm_nodes=200),
}


def small_setting() -> bool:
    r"""Whether the environment asks for the small setting
    (:obj:`PYG_LEGO_SMALL=1`, as in CI)."""
    return os.environ.get('PYG_LEGO_SMALL', '0') not in ('', '0', 'false')


def robustness_methods() -> List[Method]:
    r"""The methods compared when a noise view and a corrupted view are
    added."""
    return [
        Method('MLP (concat features)', 'gnn', 'mlp'),
        Method('LabelProp (best view)', 'lp', graph='best_view'),
        Method('GCN (best view)', 'gnn', 'gcn', 'best_view'),
        Method('GCN (concat)', 'gnn', 'gcn', 'concat'),
        Method('GCN (mean adjacency)', 'gnn', 'gcn', 'mean'),
    ] + [Method(f'LEGO {mode}/linear + GCN', 'lego', 'gcn', mode=mode,
                fusion='linear')
         for mode in ('elementwise', 'masked', 'propagated')]


def given_graph_methods(data: MultiViewData) -> List[Method]:
    r"""Baselines on each view's graph, their union and their mean, and LEGO
    (masked and element-wise: the propagated mode needs features for every
    view) on the given graphs plus the feature view."""
    methods = [Method('MLP (features)', 'gnn', 'mlp'),
               Method('LabelProp (best view)', 'lp', graph='best_view')]
    methods += [Method(f'GCN ({name})', 'gnn', 'gcn', f'view:{name}')
                for name in data.views]
    methods += [Method('GCN (union of all graphs)', 'gnn', 'gcn', 'concat'),
                Method('GCN (mean adjacency)', 'gnn', 'gcn', 'mean')]
    methods += [Method(f'LEGO {mode}/{fusion} + GCN', 'lego', 'gcn',
                       mode=mode, fusion=fusion)
                for mode in ('elementwise', 'masked')
                for fusion in ('linear', 'polynomial')]
    return methods


def suite_data(suite: str, small: bool = False) -> MultiViewData:
    r"""The data set of a suite."""
    s = SETTINGS['small' if small else 'full']
    if suite == 'comparison':
        return digits_views(s['num_nodes'])
    if suite == 'robustness':
        return with_corrupted_views(digits_views(s['num_nodes']),
                                    corrupt='pixels')
    if suite == 'given_graphs':
        return multiplex_sbm(s['sbm_nodes'])
    raise ValueError(f"unknown suite {suite!r}; suites: {SUITES}")


def run_suite(suite: str, small: bool = False, progress: bool = True,
              methods: Optional[List[Method]] = None) -> Dict[str, Any]:
    r"""Runs one suite and returns a JSON-ready dictionary: settings, data
    set, per-run records, the summary (mean, std of test accuracy) and the
    learned view shares of the linear LEGO fusions."""
    s = SETTINGS['small' if small else 'full']
    data = suite_data(suite, small)
    if methods is None:
        methods = {'comparison': default_methods,
                   'robustness': robustness_methods,
                   'given_graphs': lambda: given_graph_methods(data)}[suite]()
    rates = s['label_rates'] if suite == 'comparison' else (s['robust_rate'],)
    start = time.perf_counter()
    records = run_benchmark(data, methods, label_rates=rates,
                            seeds=s['seeds'], budget=s['budget'],
                            epochs=s['epochs'], patience=s['patience'],
                            progress=progress)
    return {
        'suite': suite,
        'setting': 'small' if small else 'full',
        'protocol': {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in s.items()},
        'data': repr(data),
        'seconds': time.perf_counter() - start,
        'threads': torch.get_num_threads(),
        'summary': {m: {str(r): v for r, v in rates.items()}
                    for m, rates in summarize(records).items()},
        'shares': {m: {str(r): v for r, v in rates.items()}
                   for m, rates in mean_shares(records).items()},
        'records': [asdict(r) for r in records],
    }


def _summary(result: Dict[str, Any]):
    return {m: {int(r): tuple(v) for r, v in rates.items()}
            for m, rates in result['summary'].items()}


def shares_markdown(result: Dict[str, Any]) -> str:
    r"""The mean learned view shares of the linear LEGO fusions as a
    markdown table (one row per method and label rate)."""
    rows = [(m, r, v) for m, rates in result['shares'].items()
            for r, v in rates.items()]
    if not rows:
        return ''
    views = list(rows[0][2])
    lines = ['| method | labels/class | ' + ' | '.join(views) + ' |',
             '|---' * (len(views) + 2) + '|']
    for m, r, v in rows:
        lines.append(f'| {m} | {r} | ' +
                     ' | '.join(f'{v[name]:.2f}' for name in views) + ' |')
    return '\n'.join(lines)


def report_markdown(results: List[Dict[str, Any]]) -> str:
    r"""All suites' tables (test accuracy, %, mean ± std over seeds) and the
    learned view shares, as one markdown document."""
    parts = []
    for res in results:
        p = res['protocol']
        parts.append(f"### {res['suite']} ({res['setting']} setting)\n\n"
                     f"{res['data']}; seeds {p['seeds']}, tuning budget "
                     f"{p['budget']} configurations; {res['seconds']:.0f} s "
                     f"on {res['threads']} thread(s).\n\n"
                     f"{to_markdown(_summary(res))}")
        shares = shares_markdown(res)
        if shares:
            parts.append('Learned view shares (linear fusion, orders >= 1 '
                         'except in the propagated mode):\n\n' + shares)
    return '\n\n'.join(parts) + '\n'
