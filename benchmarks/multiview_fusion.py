r"""The fusion study (:mod:`pyg_lego.multiview.fusion_study`): LEGO's fused
graph against SNF, a semantic-attention multi-graph GNN and the usual
baselines on four multi-view data sets.

    python benchmarks/multiview_fusion.py dev --out results/fusion_dev.json
    python benchmarks/multiview_fusion.py study --out results/fusion.json
    python benchmarks/multiview_fusion.py render results/fusion.json \
        --dev results/fusion_dev.json --markdown results/fusion.md

``dev`` is the validation-only sweep that fixed LEGO's defaults (``--stage2
--fusions polynomial`` sweeps the fusion kind at those defaults); ``study``
the comparison. ``--datasets`` runs a subset, so that the data sets can run
in parallel processes; ``render`` merges such files (``--study-out`` and
``--dev-out`` write the merged records) and writes the markdown tables. ``--small`` (or ``PYG_LEGO_SMALL=1``) runs a quick setting.
"""
import argparse
import json
import os

import torch

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
        for name, configs in part.get('validation', {}).items():
            merged['validation'].setdefault(name, {}).update(configs)
        merged.get('datasets', {}).update(part.get('datasets', {}))
    return merged


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('stage', choices=('dev', 'study', 'render'))
    parser.add_argument('inputs', nargs='*',
                        help='render: study records to merge')
    parser.add_argument('--out', help='dev / study: the JSON to write')
    parser.add_argument('--dev', nargs='*', default=[],
                        help='render: dev-sweep records to merge')
    parser.add_argument('--markdown', help='render: the markdown to write')
    parser.add_argument('--study-out', help='render: write the merged study '
                        'records here')
    parser.add_argument('--dev-out', help='render: write the merged dev '
                        'records here')
    parser.add_argument('--datasets', nargs='+', default=list(FUSION_DATA),
                        choices=FUSION_DATA)
    parser.add_argument('--fusions', nargs='+', default=['linear'],
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
    if args.stage == 'dev':
        if args.stage2:
            result = dev_sweep(args.datasets, small=small,
                               score_maps=(LEGO_DEFAULT['score_map'], ),
                               topks=(LEGO_DEFAULT['topk'], ),
                               modes=(LEGO_DEFAULT['mode'], ),
                               fusions=args.fusions)
        else:
            result = dev_sweep(args.datasets, small=small,
                               fusions=args.fusions)
    else:
        result = run_fusion_study(args.datasets, small=small)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
