r"""The fusion study (:mod:`pyg_lego.multiview.fusion_study`): LEGO's fused
graph against SNF, a semantic-attention multi-graph GNN and the usual
baselines on four multi-view data sets.

    python benchmarks/multiview_fusion.py dev --out results/fusion_dev.json
    python benchmarks/multiview_fusion.py study --out results/fusion.json
    python benchmarks/multiview_fusion.py render results/fusion.json \
        --dev results/fusion_dev.json --markdown results/fusion.md
    python benchmarks/multiview_fusion.py overlap --out results/fusion_overlap.json \
        --markdown results/fusion_overlap.md

``dev`` is the validation-only sweep that fixed LEGO's defaults (``--stage2
--fusions polynomial`` sweeps the fusion kind at those defaults); ``study``
the comparison; ``overlap`` how much the views share the study's pattern
(:func:`pyg_lego.diagnostics.view_overlap`), which the polynomial fusion's
cross-view products need. ``--datasets`` runs a subset, so that the data sets can run
in parallel processes; ``render`` merges such files (``--study-out`` and
``--dev-out`` write the merged records) and writes the markdown tables. ``--small`` (or ``PYG_LEGO_SMALL=1``) runs a quick setting.
"""
import argparse
import json
import os

import torch

from pyg_lego.data import build_relation_graph
from pyg_lego.multiview.fusion_study import (FUSION_DATA, LEGO_DEFAULT,
                                             dev_sweep, run_fusion_study)
from pyg_lego.multiview.suites import small_setting


def _merge(paths):
    merged = None
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        if merged is None:
            merged = part
            continue
        # A dev sweep's configurations of one data set may come from
        # several files (e.g. a second stage); a study's data sets from one.
        for table in ('validation', 'homophily'):
            for name, configs in part.get(table, {}).items():
                merged.setdefault(table, {}).setdefault(name, {}).update(
                    configs)
        merged.get('datasets', {}).update(part.get('datasets', {}))
    return merged


def view_overlaps(datasets, small: bool, k: int = 10) -> dict:
    r"""Per data set: each view's share of the pattern's off-diagonal edges
    with a non-zero score, the share where every view's score is non-zero,
    and where every view has a non-zero masked power of some order
    :math:`1 \le p \le P` (the edges on which a product of all views, as
    the polynomial fusion's cross-view terms take, can be non-zero)."""
    from pyg_lego.diagnostics import view_overlap
    from pyg_lego.multiview.lego_classifier import expand
    from pyg_lego.multiview.fusion_study import fusion_data
    out = {'k': k, 'score_map': LEGO_DEFAULT['score_map'],
           'mode': LEGO_DEFAULT['mode'], 'P': 2, 'datasets': {}}
    for name in datasets:
        data = fusion_data(name, small)
        graph = build_relation_graph(data.views, k=k,
                                     score_map=LEGO_DEFAULT['score_map'])
        scores = view_overlap(graph.edge_index, graph.edge_attr)
        powers = expand(graph, out['P'], LEGO_DEFAULT['mode'])
        reach = view_overlap(graph.edge_index,
                             powers[:, :, 1:].abs().amax(-1))
        out['datasets'][name] = {
            'views': list(graph.view_names),
            'per_view': scores['per_view'], 'all_views': scores['all_views'],
            'all_views_any_order': reach['all_views']}
    return out


def overlap_markdown(record: dict) -> str:
    lines = [f"How much the views share the study's pattern (k = "
             f"{record['k']}, score map {record['score_map']}; self-loops "
             f"left out): the share of the pattern's edges on which each "
             f"view's score is non-zero, on which every view's is, and on "
             f"which every view has a non-zero {record['mode']} power of "
             f"some order 1..{record['P']}:", '',
             '| data set | per view | every view | every view, some order |',
             '|---|---|---|---|']
    for name, r in record['datasets'].items():
        per = ', '.join(f'{v} {s:.3f}'
                        for v, s in zip(r['views'], r['per_view']))
        lines.append(f"| {name} | {per} | {r['all_views']:.3f} | "
                     f"{r['all_views_any_order']:.3f} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('stage', choices=('dev', 'study', 'render',
                                          'overlap'))
    parser.add_argument('inputs', nargs='*',
                        help='render: study records to merge')
    parser.add_argument('--out', help='dev / study: the JSON to write')
    parser.add_argument('--dev', nargs='*', default=[],
                        help='render: dev-sweep records to merge')
    parser.add_argument('--markdown', help='render / overlap: the markdown '
                        'to write')
    parser.add_argument('--study-out', help='render: write the merged study '
                        'records here')
    parser.add_argument('--dev-out', help='render: write the merged dev '
                        'records here')
    parser.add_argument('--datasets', nargs='+', default=list(FUSION_DATA),
                        choices=FUSION_DATA)
    parser.add_argument('--fusions', nargs='+',
                        default=['linear', 'geometric'],
                        help='dev: the fusion kinds to sweep')
    parser.add_argument('--stage2', action='store_true',
                        help='dev: sweep the fusion kinds at LEGO_DEFAULT '
                        'only')
    parser.add_argument('--small', action='store_true',
                        help='quick setting (also PYG_LEGO_SMALL=1)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (1 is steadiest on a shared '
                        'machine)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    small = args.small or small_setting()
    if args.stage == 'render':
        if not args.inputs or not args.markdown:
            parser.error('render needs study records and --markdown')
        from pyg_lego.multiview.fusion_report import render_study
        study = _merge(args.inputs)
        dev = _merge(args.dev) if args.dev else None
        if dev is not None:
            from pyg_lego.multiview.statistics import mean_ranks
            dev['mean_rank'] = mean_ranks(dev['validation'])
            if args.dev_out:
                with open(args.dev_out, 'w') as f:
                    json.dump(dev, f, indent=1)
        if args.study_out:
            with open(args.study_out, 'w') as f:
                json.dump(study, f, indent=1)
        text = render_study(study, dev)
        with open(args.markdown, 'w') as f:
            f.write(text)
        print(text)
        return
    if not args.out:
        parser.error(f'{args.stage} needs --out')
    if args.stage == 'overlap':
        result = view_overlaps(args.datasets, small)
        text = overlap_markdown(result)
        if args.markdown:
            with open(args.markdown, 'w') as f:
                f.write(text)
        print(text)
    elif args.stage == 'dev':
        if args.stage2:
            result = dev_sweep(args.datasets, small=small,
                               score_maps=(LEGO_DEFAULT['score_map'], ),
                               topks=(LEGO_DEFAULT['topk'], ),
                               modes=(LEGO_DEFAULT['mode'], ),
                               fusions=args.fusions)
        else:
            result = dev_sweep(args.datasets, small=small,
                               fusions=args.fusions)
    elif args.stage == 'study':
        result = run_fusion_study(args.datasets, small=small)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
