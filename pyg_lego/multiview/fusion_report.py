r"""Markdown tables of the fusion study, rendered from its records (the
README and the notebooks quote them from here, never by hand)."""
import math
from typing import Any, Dict, List, Optional

from pyg_lego.multiview.fusion_study import (GIVEN_GRAPH_DATA, LEGO_PREFIX,
                                             study_tables)

#: Significance level of the study's paired tests.
ALPHA = 0.05


def _pct(x: float) -> str:
    return f'{100 * x:.1f}'


def dataset_markdown(name: str, cell_tables: Dict[str, Any]) -> str:
    r"""One data set: a row per method, a column per label rate with test
    accuracy (%, mean ± std over seeds), the weighted homophily of the
    method's graph and, on LEGO's rows, the p-value against the cell's
    best baseline."""
    rates = sorted(cell_tables, key=int)
    methods: List[str] = list(cell_tables[rates[0]])
    lines = [f'#### {name}', '',
             '| method | ' + ' | '.join(f'{r}/class' for r in rates) + ' |',
             '|---' * (len(rates) + 1) + '|']
    for m in methods:
        cells = []
        for r in rates:
            v = cell_tables[r].get(m)
            if v is None:
                cells.append('')
                continue
            text = f"{_pct(v['mean'])} ± {_pct(v['std'])}"
            best = max(c['mean'] for c in cell_tables[r].values())
            if v['mean'] == best:
                text = f'**{text}**'
            if v['weighted_homophily'] is not None:
                text += f" (h {v['weighted_homophily']:.3f})"
            if v.get('empty_graphs'):
                text += f" [{v['empty_graphs']} empty]"
            if 'p_value' in v:
                text += f" p={v['p_value']:.3f}"
            cells.append(text)
        lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def homophily_markdown(result: Dict[str, Any],
                       tables: Dict[str, Any]) -> str:
    r"""Per data set: the weighted homophily (and edges per node) of the
    best view's kNN (or given) graph, of the concatenated-feature graph and
    of LEGO's learned default graph (mean over runs)."""
    lines = ['| data set | best view graph | concat graph | '
             'LEGO fused graph (learned, mean over runs) |',
             '|---|---|---|---|']
    for name, d in result['datasets'].items():
        views = {k: v for k, v in d['graphs'].items()
                 if k.startswith('view:')}
        best = max(views, key=lambda k: views[k]['weighted_homophily'])
        fused = _fused_homophily(tables, name)
        per_node = _fused_edges_per_node(result, name)
        fused_text = '' if fused is None else \
            f'{fused:.3f} ({per_node:.1f} edges/node)'
        concat = d['graphs']['concat']
        lines.append(
            f"| {name} | {views[best]['weighted_homophily']:.3f} "
            f"({best[5:]}, {views[best]['edges_per_node']:.1f} edges/node) | "
            f"{concat['weighted_homophily']:.3f} "
            f"({concat['edges_per_node']:.1f} edges/node) | {fused_text} |")
    return '\n'.join(lines)


def _fused_homophily(tables: Dict[str, Any], name: str) -> Optional[float]:
    method = f'{LEGO_PREFIX} + GCN'
    values = [c[method]['weighted_homophily']
              for c in tables['tables'][name].values()
              if method in c and c[method]['weighted_homophily'] is not None]
    return sum(values) / len(values) if values else None


def _fused_edges_per_node(result: Dict[str, Any], name: str) -> float:
    # Edges that keep a positive weight.
    runs = [r['quality']['edges_per_node']
            for r in result['datasets'][name]['records']
            if r['method'] == f'{LEGO_PREFIX} + GCN' and r.get('quality')]
    return sum(runs) / len(runs) if runs else math.nan


def targets(tables: Dict[str, Any]) -> Dict[str, Any]:
    r"""The issue's targets as counts: cells where LEGO + GCN beats the
    best baseline, and where it does so with :math:`p <` :data:`ALPHA`;
    cells where learning beats the fixed fusion significantly."""
    method = f'{LEGO_PREFIX} + GCN'
    cells = [c[method] for t in tables['tables'].values()
             for c in t.values() if method in c]
    versus = tables['learned_vs_fixed'].values()
    return {
        'cells': len(cells),
        'wins': sum(c['wins'] for c in cells),
        'significant_wins': sum(c['wins'] and c['p_value'] < ALPHA
                                for c in cells),
        'learned_beats_fixed': sum(v['difference'] > 0 and
                                   v['p_value'] < ALPHA for v in versus),
        'fixed_beats_learned': sum(v['difference'] < 0 and
                                   v['p_value'] < ALPHA for v in versus),
    }


def targets_markdown(result: Dict[str, Any], tables: Dict[str, Any]) -> str:
    r"""The study's targets, each with what was measured and whether it is
    met."""
    method = f'{LEGO_PREFIX} + GCN'
    t = targets(tables)
    gaps = []
    for name, d in result['datasets'].items():
        if name in GIVEN_GRAPH_DATA:
            continue
        fused = _fused_homophily(tables, name)
        best = max(v['weighted_homophily'] for v in d['graphs'].values())
        gaps.append((name, None if fused is None else fused - best))
    ranks = sorted(tables['mean_rank'].items(), key=lambda x: x[1])
    place = [m for m, _ in ranks].index(method) + 1
    versus = tables['learned_vs_fixed']
    better = sorted({c.split('/')[0] for c, v in versus.items()
                     if v['difference'] > 0 and v['p_value'] < ALPHA})
    rows = [
        ('weighted homophily of the fused graph >= the best view graph and '
         'the concat graph, every feature-view data set',
         ', '.join(f'{n} {g:+.3f}' if g is not None else f'{n} n/a'
                   for n, g in gaps),
         all(g is not None and g >= 0 for _, g in gaps)),
        (f'{method} first by mean rank',
         f'{place} of {len(ranks)} ({tables["mean_rank"][method]:.2f}; '
         f'first: {ranks[0][0]}, {ranks[0][1]:.2f})', place == 1),
        ('beats the best baseline with p < 0.05 in at least half the cells',
         f"{t['significant_wins']} of {t['cells']}",
         2 * t['significant_wins'] >= t['cells']),
        ('learned fusion beats the fixed equal-weight fusion significantly',
         f"{t['learned_beats_fixed']} of {len(versus)} cells"
         + (f" (all on {', '.join(better)})" if better else '')
         + f"; fixed better in {t['fixed_beats_learned']}",
         'yes' if t['learned_beats_fixed'] == len(versus) else
         'partly' if t['learned_beats_fixed'] > 0 else 'no'),
    ]
    return ('| target | measured | met |\n|---|---|---|\n' + '\n'.join(
        f"| {a} | {b} | {ok if isinstance(ok, str) else 'yes' if ok else 'no'}"
        f" |" for a, b, ok in rows))


def dev_markdown(dev: Dict[str, Any]) -> str:
    r"""The development sweep: validation accuracy (%) of each LEGO
    configuration per data set, ordered by mean rank, with the weighted
    homophily of its learned graphs where the record holds it."""
    names = list(dev['validation'])
    order = sorted(dev['mean_rank'], key=dev['mean_rank'].get)
    homophily = dev.get('homophily', {})
    lines = ['| configuration | mean rank | ' + ' | '.join(names) + ' |',
             '|---' * (len(names) + 2) + '|']

    def cell(name: str, key: str) -> str:
        h = homophily.get(name, {}).get(key)
        return _pct(dev['validation'][name][key]) + \
            (f' (h {h:.3f})' if h is not None else '')
    for key in order:
        lines.append(f"| {key} | {dev['mean_rank'][key]:.1f} | " +
                     ' | '.join(cell(n, key) for n in names) + ' |')
    return '\n'.join(lines)


def render_study(result: Dict[str, Any],
                 dev: Optional[Dict[str, Any]] = None) -> str:
    r"""The whole study as one markdown document."""
    tables = study_tables(result)
    p = result['protocol']
    t = targets(tables)
    lego = ', '.join(f'{k}={v}' for k, v in result['lego'].items())
    parts = [
        f"### Fusion study ({result['setting']} setting)",
        f"LEGO: {lego}, k = {result['k']}. Label rates {p['label_rates']} "
        f"per class, seeds {p['seeds'][0]}..{p['seeds'][-1]}, "
        f"{p['budget']} configurations per method tuned on the first "
        f"seed's validation nodes. Cells: test accuracy %, mean ± std; "
        f"(h) weighted edge homophily of the method's graph; [n empty]: "
        f"runs whose learned fused graph kept no positive weight; p: "
        f"two-sided Wilcoxon signed-rank test over seeds against the "
        f"cell's best baseline (LEGO's rows).",
        f"**LEGO + GCN beats the best baseline in {t['wins']} of "
        f"{t['cells']} cells, with p < {ALPHA} in "
        f"{t['significant_wins']}. Learned fusion beats the fixed mean "
        f"significantly in {t['learned_beats_fixed']} cells, the fixed mean "
        f"beats it in {t['fixed_beats_learned']}.**",
        '#### Mean rank over all cells',
        '| method | mean rank |\n|---|---|\n' + '\n'.join(
            f'| {m} | {r:.2f} |' for m, r in
            sorted(tables['mean_rank'].items(), key=lambda x: x[1])),
        '#### Targets',
        targets_markdown(result, tables),
        '#### Weighted homophily of the graphs',
        homophily_markdown(result, tables),
    ]
    parts += [dataset_markdown(name, tables['tables'][name])
              for name in result['datasets']]
    parts.append('#### Learned against fixed fusion (LEGO + GCN)\n\n'
                 '| cell | learned - fixed (points) | p |\n|---|---|---|\n' +
                 '\n'.join(f"| {c} | {100 * v['difference']:+.1f} | "
                           f"{v['p_value']:.3f} |"
                           for c, v in tables['learned_vs_fixed'].items()))
    if dev is not None:
        parts.append(
            f"#### Development sweep (fixed LEGO's defaults)\n\n"
            f"Validation accuracy % of learned LEGO + GCN, seeds "
            f"{dev['seeds']}, {dev['per_class']} labels per class, one "
            f"configuration {dev['config']}; no test label read. The "
            f"configurations are ranked by accuracy alone; (h), the "
            f"weighted homophily of their learned graphs, reads every "
            f"node's label and is shown, not used.\n\n" +
            dev_markdown(dev))
    return '\n\n'.join(parts) + '\n'


def readme_summary(result: Dict[str, Any]) -> str:
    r"""The README's summary of the study: the targets, the mean ranks and
    the homophily of the graphs."""
    tables = study_tables(result)
    p = result['protocol']
    ranks = sorted(tables['mean_rank'].items(), key=lambda x: x[1])
    return '\n\n'.join([
        f"{len(result['datasets'])} data sets x {len(p['label_rates'])} "
        f"label rates ({', '.join(map(str, p['label_rates']))} labels per "
        f"class), {len(p['seeds'])} seeds; p-values from Wilcoxon "
        f"signed-rank tests paired over seeds against the best baseline of "
        f"each cell.",
        targets_markdown(result, tables),
        '| method | mean rank over all cells |\n|---|---|\n' + '\n'.join(
            f'| {m} | {r:.2f} |' for m, r in ranks),
        'Weighted edge homophily (share of edge weight between nodes of '
        'the same class) of the graphs:\n\n' +
        homophily_markdown(result, tables),
    ])
