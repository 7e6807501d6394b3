r"""The partitioned pipeline (``python -m pyg_lego.distributed``) on
:math:`W = 1, 2, 4` processes of this machine: per rank and stage, the time,
the peak resident memory and the bytes sent to other ranks, from the job's
own manifests; the ratio of the peak memory per rank against :math:`W = 1`;
and a projection to :math:`10^8` nodes on 64 machines from the measured
per-rank costs.

    python benchmarks/partitioned.py --sizes 50000 --out benchmarks/results
    python benchmarks/partitioned.py --sizes 100000 --worlds 4 --append
    python benchmarks/partitioned.py render \
        benchmarks/results/partitioned.json \
        --markdown benchmarks/results/partitioned.md

Each job runs under ``torchrun --standalone``, with
``OMP_NUM_THREADS = max(1, cores // W)``. The :math:`W` ranks share this
machine's cores, so the wall times at :math:`W > 1` are not speed-ups: the
memory per rank and the bytes sent are what the runs measure.
"""
import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # timing, where loaded from elsewhere (render.py)

from timing import render_record, write_record  # noqa: E402

STAGES = ('pattern', 'scores', 'powers', 'fusion')
MiB = 2**20
#: The projection's target.
TARGET_N, TARGET_W = 10**8, 64


def run_job(n: int, world: int, k: int, dims, P: int, timeout: float,
            threads: int) -> dict:
    out = tempfile.mkdtemp(prefix='partitioned_bench_')
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    cmd = [torchrun, '--standalone', f'--nproc_per_node={world}', '-m',
           'pyg_lego.distributed', '--synthetic', str(n), '--k', str(k),
           '--synthetic-dims', *map(str, dims), '--P', str(P), '--out', out,
           '--timeout', str(timeout)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"W={world}, N={n} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, 'manifest.json')) as f:
        manifest = json.load(f)
    shutil.rmtree(out)
    ranks = []
    for r in manifest['ranks']:
        ranks.append({
            'rank': r['rank'], 'rows': r['sizes'][r['rank']],
            'base_rss': r['run']['base_rss'],
            'peak_method': r['run']['peak_method'],
            'stages': {s: {'time_s': e['time_s'], 'peak_rss': e['peak_rss'],
                           'sent': e['sent'],
                           'sent_bytes': sum(e['sent'].values()),
                           'shape': e['shape']}
                       for s, e in r['stages'].items()}})
    return {'N': n, 'W': world, 'threads': threads, 'wall_s': wall,
            'ranks': ranks}


def summary(result: dict) -> list:
    r"""Per job: the largest peak RSS of a rank (over stages), and above
    the rank's RSS before it loaded its rows, with their ratios to the
    job of the same N on one process."""
    rows = []
    for job in result['jobs']:
        peak = max(max(s['peak_rss'] for s in r['stages'].values())
                   for r in job['ranks'])
        above = max(max(s['peak_rss'] for s in r['stages'].values()) -
                    r['base_rss'] for r in job['ranks'])
        rows.append({'N': job['N'], 'W': job['W'], 'peak': peak,
                     'above': above, 'base': max(r['base_rss']
                                                 for r in job['ranks']),
                     'sent': sum(sum(s['sent_bytes']
                                     for s in r['stages'].values())
                                 for r in job['ranks']),
                     'wall_s': job['wall_s']})
    for row in rows:
        one = next((r for r in rows if r['N'] == row['N'] and r['W'] == 1),
                   None)
        row['ratio'] = row['peak'] / one['peak'] if one else None
        row['ratio_above'] = row['above'] / one['above'] if one else None
    return rows


def _halo(job: dict, dims: int) -> float:
    r"""The mean halo of a job's ranks (the nodes of other ranks a rank
    fetches): the feature rows the ranks sent for the scores, over the
    bytes of one row."""
    sent = [r['stages']['scores']['sent'].get('scores/features', 0)
            for r in job['ranks']]
    return sum(sent) / len(sent) / (4 * dims)


def _halo_bytes(stage: str, deg: float, views: int, dims: int) -> float:
    r"""Bytes a rank holds per halo node in a stage, as received: the
    features (scores); the row's columns and every view's values and
    degree (masked powers)."""
    return {'scores': 4 * dims,
            'powers': deg * (8 + 4 * views) + 4 * views}.get(stage, 0.0)


def _random_halo(n: float, num_nodes: float, deg: float) -> float:
    r"""The expected halo of a rank of :math:`n` rows in random order:
    the other ranks' nodes hit by :math:`n (deg - 1)` edge ends drawn
    uniformly from all :math:`N` nodes."""
    return (num_nodes - n) * (1 - math.exp(-n * (deg - 1) / num_nodes))


def _fit_sizes(result: dict) -> list:
    r"""The N measured on one process and on several."""
    return [j['N'] for j in result['jobs'] if j['W'] == 1 and any(
        o['N'] == j['N'] and o['W'] > 1 for o in result['jobs'])]


def memory_model(result: dict) -> dict:
    r"""Each stage's peak RSS above the base as :math:`c + a E_r + h H_r`:
    :math:`h` the halo's bytes per node as received (analytic), :math:`a`
    (bytes per edge) and :math:`c` (fixed: chunked work space) solved from
    the job on one process and the one on the most processes at the
    largest N that has both; with the other jobs predicted against their
    measurement."""
    meta = result['meta']
    dims, views = sum(meta['dims']), len(meta['dims'])
    num_nodes = max(_fit_sizes(result))
    one = next(j for j in result['jobs']
               if j['N'] == num_nodes and j['W'] == 1)
    many = max((j for j in result['jobs'] if j['N'] == num_nodes),
               key=lambda j: j['W'])
    deg = one['ranks'][0]['stages']['pattern']['shape'][1] / num_nodes
    base = max(r['base_rss'] for j in result['jobs'] for r in j['ranks'])

    def point(job):
        r = max(job['ranks'], key=lambda r: r['rows'])
        return r, r['stages']['pattern']['shape'][1], _halo(job, dims)
    (r1, e1, _), (rw, ew, hw) = point(one), point(many)
    stages = {}
    for stage in STAGES:
        h = _halo_bytes(stage, deg, views, dims)
        y1 = r1['stages'][stage]['peak_rss'] - r1['base_rss']
        yw = rw['stages'][stage]['peak_rss'] - rw['base_rss'] - h * hw
        a = (y1 - yw) / (e1 - ew)
        stages[stage] = {'fixed': y1 - a * e1, 'per_edge': a,
                         'per_halo_node': h}

    def predict(edges, halo):
        return base + max(m['fixed'] + m['per_edge'] * edges +
                          m['per_halo_node'] * halo
                          for m in stages.values())
    checks = []
    for job in result['jobs']:
        r, e, h = point(job)
        measured = max(s['peak_rss'] for s in r['stages'].values())
        checks.append({'N': job['N'], 'W': job['W'],
                       'fitted': job is one or job is many,
                       'predicted': predict(e, h), 'measured': measured})
    return {'from': [num_nodes, many['W']], 'deg': deg, 'base': base,
            'stages': stages, 'checks': checks, 'predict': predict}


def projection(result: dict) -> dict:
    r"""Per-rank costs at :math:`10^8` nodes on 64 ranks, rows in random
    order: memory by :func:`memory_model`; time by each stage's rate on one
    core per rank (the job on 2 ranks of the largest N: kNN per pair of
    rows, the other stages per edge); bytes by the halo (the powers' bytes
    per halo node as measured, the kNN ring's blocks exactly)."""
    meta = result['meta']
    dims = sum(meta['dims'])
    model = memory_model(result)
    num_nodes = model['from'][0]
    timed = min((j for j in result['jobs']
                 if j['N'] == num_nodes and j['W'] > 1),
                key=lambda j: j['W'])
    r = max(timed['ranks'], key=lambda r: r['rows'])
    edges = r['stages']['pattern']['shape'][1]
    many = max((j for j in result['jobs'] if j['N'] == num_nodes),
               key=lambda j: j['W'])
    halo_m = _halo(many, dims)
    rm = many['ranks'][0]
    n_t = TARGET_N / TARGET_W
    e_t = model['deg'] * n_t
    h_t = _random_halo(n_t, TARGET_N, model['deg'])
    out = {'rows': n_t, 'edges': e_t, 'halo': h_t, 'stages': []}
    for stage in STAGES:
        s, m = r['stages'][stage], model['stages'][stage]
        if stage == 'pattern':
            time_s = s['time_s'] * (n_t * TARGET_N) / (r['rows'] * num_nodes)
            # The ring passes W - 1 blocks; the reverse edges go out as
            # measured per edge, for the share of ends held elsewhere.
            exchange = rm['stages'][stage]['sent'].get('pattern/exchange', 0)
            sent = (TARGET_W - 1) * n_t * dims * 4 + exchange / \
                rm['stages']['pattern']['shape'][1] * e_t * \
                (1 - 1 / TARGET_W) / (1 - 1 / many['W'])
        else:
            time_s = s['time_s'] * e_t / edges
            sent = rm['stages'][stage]['sent_bytes'] / halo_m * h_t \
                if halo_m else 0.0
        memory = model['base'] + m['fixed'] + m['per_edge'] * e_t + \
            m['per_halo_node'] * h_t
        out['stages'].append({'stage': stage, 'time_s': time_s,
                              'memory': memory, 'sent': sent})
    return out


def _gib(b):
    return f"{b / 2**30:.2f}"


def _dur(s):
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"


def readme_line(result: dict) -> str:
    r"""The README's sentence: each measured ratio of a rank's peak RSS to
    one process's, against the goals."""
    parts = [f"{row['ratio']:.2f}x at W = {row['W']}"
             for row in summary(result) if row['ratio'] and row['W'] > 1]
    sizes = sorted({row['N'] for row in summary(result)
                    if row['ratio'] and row['W'] > 1})
    return (f"Peak RSS per rank against one process at N = "
            f"{', '.join(map(str, sizes))}: {', '.join(parts)} (goals: 0.6x "
            f"at W = 2, 0.35x at W = 4).\n")


def to_markdown(result: dict) -> str:
    meta = result['meta']
    lines = [
        f"The partitioned pipeline on {meta['cpus']} CPU cores "
        f"({meta['machine']}, torch {meta['torch']}, gloo): "
        f"{len(meta['dims'])} synthetic views of widths "
        f"{', '.join(map(str, meta['dims']))}, k = {meta['k']}, "
        f"P = {meta['P']} (masked), linear fusion. Peak memory is the "
        f"rank's RSS high-water mark ({meta['peak_method']}); 'above base' "
        f"subtracts the rank's RSS before it loaded its rows (the "
        f"interpreter, torch and pyg_lego). The ranks of a job share the "
        f"machine's cores, so wall times at W > 1 are not speed-ups.", '',
        "| N | W | peak RSS / rank (GiB) | vs W = 1 | above base (GiB) "
        "| vs W = 1 | sent, all ranks (MiB) | wall (s) |",
        "|---|---|---|---|---|---|---|---|"]
    for row in summary(result):
        ratio = f"{row['ratio']:.2f}x" if row['ratio'] else '-'
        above = f"{row['ratio_above']:.2f}x" if row['ratio_above'] else '-'
        lines.append(f"| {row['N']} | {row['W']} | {_gib(row['peak'])} | "
                     f"{ratio} | {_gib(row['above'])} | {above} | "
                     f"{row['sent'] / MiB:.1f} | {row['wall_s']:.0f} |")
    lines += ['', "Per rank and stage (peak: the stage's own high-water "
              "mark):", '',
              "| N | W | rank | rows | stage | time (s) | peak RSS (GiB) "
              "| sent (MiB) |", "|---|---|---|---|---|---|---|---|"]
    for job in result['jobs']:
        for r in job['ranks']:
            for stage in STAGES:
                s = r['stages'][stage]
                lines.append(
                    f"| {job['N']} | {job['W']} | {r['rank']} | {r['rows']} "
                    f"| {stage} | {s['time_s']:.2f} | {_gib(s['peak_rss'])} "
                    f"| {s['sent_bytes'] / MiB:.2f} |")
    if not _fit_sizes(result):  # no model without W = 1 and W > 1
        return '\n'.join(lines) + '\n'
    model = memory_model(result)
    n_f, w_f = model['from']
    lines += ['', f"Peak RSS above the base per stage as c + a E_r + h H_r "
              f"(E_r the rank's edges, H_r its halo nodes; h analytic, the "
              f"halo's rows as received; a and c solved from W = 1 and "
              f"W = {w_f} at N = {n_f}):", '',
              "| stage | c, fixed (MiB) | a, per edge (bytes) "
              "| h, per halo node (bytes) |", "|---|---|---|---|"]
    for stage, m in model['stages'].items():
        lines.append(f"| {stage} | {m['fixed'] / MiB:.0f} | "
                     f"{m['per_edge']:.0f} | {m['per_halo_node']:.0f} |")
    lines += ['', "Its peak RSS per rank (the base included) against the "
              "measured:", '',
              "| N | W | predicted (GiB) | measured (GiB) | |",
              "|---|---|---|---|---|"]
    for c in model['checks']:
        lines.append(f"| {c['N']} | {c['W']} | {_gib(c['predicted'])} | "
                     f"{_gib(c['measured'])} | "
                     f"{'fitted' if c['fitted'] else 'check'} |")
    proj = projection(result)
    lines += ['', f"Projection to N = 10^8 on {TARGET_W} ranks, rows in "
              f"random order: {proj['rows']:.0f} rows, "
              f"{proj['edges'] / 1e6:.0f}M edges and a halo of "
              f"{proj['halo'] / 1e6:.0f}M nodes per rank (the expected "
              f"halo of {model['deg']:.1f} edges per node drawn uniformly, "
              f"which gives the measured halos: every other node at "
              f"N = {n_f}). Measured: the edges per node, each stage's rate "
              f"(time per pair of rows for the kNN, per edge for the "
              f"others, at W = 2: one core per rank), the model's c and a, "
              f"the powers' bytes per halo node. Extrapolated: all of them "
              f"linearly to the target's rows, edges and halo, and the kNN "
              f"ring's bytes, (W - 1) blocks of n_r rows:", '',
              "| stage | time / rank | peak RSS / rank (GiB) "
              "| sent / rank (GiB) |", "|---|---|---|---|"]
    for s in proj['stages']:
        lines.append(f"| {s['stage']} | {_dur(s['time_s'])} | "
                     f"{_gib(s['memory'])} | {_gib(s['sent'])} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('stage', nargs='?', default='measure',
                        choices=('measure', 'render'))
    parser.add_argument('record', nargs='?',
                        help='render: the record to render')
    parser.add_argument('--markdown', help='render: the markdown to write')
    parser.add_argument('--sizes', type=int, nargs='+', default=[50000])
    parser.add_argument('--worlds', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--k', type=int, default=10)
    parser.add_argument('--dims', type=int, nargs='+', default=[32, 24, 16])
    parser.add_argument('--P', type=int, default=2)
    parser.add_argument('--timeout', type=float, default=1800)
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks',
                                                      'results'))
    parser.add_argument('--append', action='store_true',
                        help="add the jobs to OUT/partitioned.json (the "
                             "same k, widths and P)")
    args = parser.parse_args(argv)
    if args.stage == 'render':
        if not args.record or not args.markdown:
            parser.error('render needs a record and --markdown')
        render_record(args.record, args.markdown, to_markdown)
        return
    cpus = os.cpu_count() or 1
    result = {'meta': {'k': args.k, 'dims': args.dims, 'P': args.P,
                       'cpus': cpus, 'machine': platform.machine(),
                       'torch': torch.__version__.split('+')[0]},
              'jobs': []}
    if args.append:
        with open(os.path.join(args.out, 'partitioned.json')) as f:
            old = json.load(f)
        if {k: old['meta'][k] for k in ('k', 'dims', 'P')} != \
                {k: result['meta'][k] for k in ('k', 'dims', 'P')}:
            parser.error("--append needs the record's k, --dims and --P")
        result = old
    for n in args.sizes:
        for world in args.worlds:
            print(f"N = {n}, W = {world} ...", file=sys.stderr, flush=True)
            job = run_job(n, world, args.k, args.dims, args.P, args.timeout,
                          max(1, cpus // world))
            result['meta']['peak_method'] = job['ranks'][0]['peak_method']
            result['jobs'].append(job)
            peak = max(max(s['peak_rss'] for s in r['stages'].values())
                       for r in job['ranks'])
            print(f"  {job['wall_s']:.0f} s, peak RSS per rank "
                  f"{peak / 2**30:.2f} GiB", file=sys.stderr, flush=True)
            # What has run so far survives a stop.
            write_record(result, args.out, 'partitioned', to_markdown)


if __name__ == '__main__':
    main()
