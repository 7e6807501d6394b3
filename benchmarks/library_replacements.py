r"""Hand-written graph and metric pieces of :mod:`pyg_lego` against the
library functions that do the same (PyG's ``coalesce``, ``to_undirected``,
``gcn_norm``, ``index2ptr``; scikit-learn's ``roc_auc_score`` and
``average_precision_score``), at a realistic size: ``--n`` nodes, a
coalesced pattern of about ``--degree`` edges per node (the union's input
of twice that, duplicates included), ``--frames`` video frames. Each pair
runs interleaved in one process (hand-written, library, hand-written, ...)
and the median of ``--repeat`` samples (each of enough calls to last
``--least`` seconds) is recorded, so that the ratio holds on a shared
machine. Each pair's outputs are compared as well.

The rule (issue 24): a hand-written piece stays only where it is at least
:data:`KEEP_RATIO` times faster than the library, or for a behavioural
reason recorded here (:data:`REASONS`). A piece the library still has is
timed as the library's own function; the others (replaced, or inline in a
larger function) are kept in this script as they were, so that they can
still be timed.

    python benchmarks/library_replacements.py                # measure
    python benchmarks/library_replacements.py render \
        benchmarks/results/library_replacements.json --markdown OUT.md

writes ``library_replacements.json`` and ``library_replacements.md`` under
``--out`` (default ``benchmarks/results``).
"""
import argparse
import os
import platform
import sys
from typing import Dict, List, Optional

import numpy as np
import sklearn
import torch
import torch_geometric
from sklearn.metrics import average_precision_score, roc_auc_score
from torch_geometric.index import index2ptr
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import coalesce, to_undirected

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # pyg_lego, uninstalled
sys.path.insert(0, HERE)  # timing, where loaded from elsewhere

from pyg_lego.data.relation import coalesce_pattern  # noqa: E402
from pyg_lego.data.similarity import csr_rowptr  # noqa: E402
from pyg_lego.nn.norm import relation_norm  # noqa: E402
from pyg_lego.vad.metrics import _average_ranks  # noqa: E402
from timing import interleaved, render_record, write_record  # noqa: E402

#: A hand-written piece stays where the library takes this many times its
#: time, or longer.
KEEP_RATIO = 1.2

#: Most calls of a piece per timed sample.
MOST_CALLS = 1024

#: Behavioural reasons to keep a hand-written piece whatever the timing.
REASONS: Dict[str, str] = {
    'coalesce_inverse': (
        'torch_geometric.utils.coalesce returns no map from the input edges '
        'to the coalesced ones, which the callers need (scores placed back '
        'on input edges); the library version times coalesce plus a '
        'searchsorted for that map'),
    'coalesce_sum_inverse': (
        'as coalesce_inverse: the merged scores are mapped back to the '
        'input edges, and coalesce returns no such map'),
    'relation_norm': (
        'gcn_norm gives NaN gradients at nodes of zero degree (pow(-0.5) is '
        'inf there before the masked_fill) and NaN values at negative '
        'degrees (raw cosine scores), where relation_norm gives 0'),
    'topk_row_start': (
        'topk_mask takes edges in any order (rows unsorted on the general '
        'path); index2ptr needs sorted rows. Timed here on sorted rows'),
    'csr_rowptr': (
        'CSRPattern.transpose counts unsorted column ids with it; index2ptr '
        'reads its ids as sorted. Timed here on sorted rows'),
}

#: Pieces with no library function to time against.
UNMATCHED: List[Dict[str, str]] = [
    {'piece': 'reverse edge ids (key sort and searchsorted)',
     'where': 'pyg_lego/nn/sparsify.py reverse_edges',
     'why': 'no PyG function returns the id of each edge\'s reverse'},
    {'piece': 'relabelled edge order with its permutation',
     'where': 'pyg_lego/nn/locality.py Relabel',
     'why': 'sort_edge_index and coalesce return no permutation'},
    {'piece': 'in-graph coalesced check',
     'where': 'pyg_lego/nn/graph_power.py _assert_coalesced',
     'why': 'a torch._assert_async inside compiled graphs; PyG has no '
            'such check'},
    {'piece': 'undirected pair matching with weight check',
     'where': 'pyg_lego/data/networkx.py to_networkx_fused',
     'why': 'needs each edge\'s reverse (to compare weights), which '
            'to_undirected does not give'},
    {'piece': 'dense D^-1/2 R D^-1/2',
     'where': 'pyg_lego/dense.py',
     'why': 'the dense oracle is written apart from the sparse code on '
            'purpose (tests/test_dense_oracle.py)'},
]


def random_edges(n: int, degree: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    row = torch.arange(n).repeat_interleave(degree)
    col = torch.randint(0, n, (n * degree, ), generator=gen)
    return torch.stack([row, col])


def union_input(n: int, degree: int) -> torch.Tensor:
    r"""The input of :func:`~pyg_lego.data.relation.union_pattern`: two
    views' kNN edges, both directions, self-loops (duplicates included)."""
    ei = torch.cat([random_edges(n, degree // 2, s) for s in (0, 1)], 1)
    ei = torch.cat([ei, ei.flip(0)], 1)
    loop = torch.arange(n)
    return torch.cat([ei, torch.stack([loop, loop])], 1)


def coalesced(n: int, degree: int) -> torch.Tensor:
    ei = random_edges(n, degree, 2)
    loop = torch.arange(n)
    key = torch.cat([ei[0] * n + ei[1], ei[1] * n + ei[0], loop * n + loop])
    key = key.unique()
    return torch.stack([key // n, key % n])


# The hand-written pieces that are no pyg_lego function as it is now
# (replaced by the library's, inline in a larger function, or with other
# arguments or an early return there), as they were in pyg_lego. Those that
# are (coalesce_pattern, relation_norm, csr_rowptr) are timed as pyg_lego's.

def hand_coalesce_sum_inverse(ei, attr, n):  # graph_power._coalesce
    key = ei[0] * n + ei[1]
    uniq, inverse = torch.unique(key, return_inverse=True)
    merged = attr.new_zeros(uniq.numel(), attr.size(1))
    merged = merged.index_add(0, inverse, attr)
    return torch.stack([uniq // n, uniq % n]), merged, inverse


def hand_symmetric_given(ei, w, n):  # relation._symmetric_given
    both = torch.cat([ei, ei.flip(0)], dim=1)
    key = both[0] * n + both[1]
    uniq, inv = torch.unique(key, return_inverse=True)
    weight = torch.zeros(uniq.numel(), dtype=w.dtype)
    weight = weight.scatter_reduce(0, inv, torch.cat([w, w]), reduce='amax',
                                   include_self=False)
    return uniq, weight


def hand_row_start(row, n):  # calibration, sparsify.topk_mask
    count = torch.bincount(row, minlength=n)
    return count, torch.cumsum(count, 0) - count


def hand_has_duplicates(ei, n):  # pyg_lego/data/networkx.py
    return torch.unique(ei[0] * n + ei[1]).numel() != ei.size(1)


# frame_auc and frame_ap without their checks of the inputs
# (_check_binary), as the record timed them.

def hand_auc(s, y):  # pyg_lego/vad/metrics.py frame_auc
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    rank_sum = _average_ranks(s)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def hand_ap(s, y):  # pyg_lego/vad/metrics.py frame_ap
    order = np.argsort(-s, kind='mergesort')
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(y)[last_of_tie]
    precision = tps / (np.flatnonzero(last_of_tie) + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


# The library versions.

def lib_coalesce_inverse(ei, n):
    out = coalesce(ei, num_nodes=n)
    inverse = torch.searchsorted(out[0] * n + out[1], ei[0] * n + ei[1])
    return out, inverse


def lib_coalesce_sum_inverse(ei, attr, n):
    out, merged = coalesce(ei, attr, n, reduce='sum')
    inverse = torch.searchsorted(out[0] * n + out[1], ei[0] * n + ei[1])
    return out, merged, inverse


def lib_symmetric_given(ei, w, n):
    out, weight = to_undirected(ei, w, n, reduce='max')
    return out[0] * n + out[1], weight


def lib_relation_norm(ei, attr, n):
    return gcn_norm(ei, attr, n, add_self_loops=False,
                    flow='target_to_source')[1]


def lib_row_start(row, n):
    ptr = index2ptr(row, n)
    return ptr.diff(), ptr[:-1]


def lib_has_duplicates(ei, n):
    return coalesce(ei, num_nodes=n).size(1) != ei.size(1)


def same(a, b, tol: float = 0.0) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        if a.shape != b.shape:
            return False
        if a.is_floating_point():
            return bool(torch.allclose(a, b.to(a.dtype), rtol=tol, atol=tol))
        return torch.equal(a, b.to(a.dtype))
    if isinstance(a, float):
        return abs(a - b) <= tol
    return a == b


def backward(fn):
    r"""Forward and backward of a function of edge scores."""
    def run(ei, attr, n):
        attr = attr.detach().requires_grad_()
        out = fn(ei, attr, n)
        out.backward(torch.ones_like(out))
        return out.detach(), attr.grad
    return run


def pieces(n: int, degree: int, frames: int, views: int) -> List[dict]:
    r"""Each piece: its name, where it lives, the library function, and
    the hand-written and library calls on the benchmark's inputs."""
    union = union_input(n, degree)
    pattern = coalesced(n, degree // 2)
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(pattern.size(1), views, generator=gen) + 0.01
    union_scores = torch.rand(union.size(1), views, generator=gen)
    given = random_edges(n, degree // 2, 4)
    given_w = torch.rand(given.size(1), generator=gen)
    row = pattern[0]
    # Frame scores as the VAD evaluation has them: one score per 16-frame
    # snippet (ties), anomalies in runs of snippets.
    rng = np.random.default_rng(0)
    snippets = frames // 16
    y_snip = (rng.random(snippets) < 0.1).astype(np.int64)
    s_snip = rng.random(snippets) + 0.5 * y_snip
    s, y = np.repeat(s_snip, 16), np.repeat(y_snip, 16)

    def auc_lib():
        return float(roc_auc_score(y, s))

    def ap_lib():
        return float(average_precision_score(y, s))
    return [
        dict(key='coalesce', piece='coalesce (sorted unique edges)',
             where='pyg_lego/data/relation.py coalesce_pattern',
             library='torch_geometric.utils.coalesce', size=union.size(1),
             hand=lambda: coalesce_pattern(union, n),
             lib=lambda: coalesce(union, num_nodes=n)),
        dict(key='coalesce_inverse', piece='coalesce with the inverse map',
             where='pyg_lego/data/relation.py coalesce_pattern '
                   '(return_inverse=True); pyg_lego/nn/sparsify.py '
                   '_unique_edges',
             library='torch_geometric.utils.coalesce + searchsorted',
             size=union.size(1),
             hand=lambda: coalesce_pattern(union, n, return_inverse=True),
             lib=lambda: lib_coalesce_inverse(union, n)),
        dict(key='coalesce_sum_inverse',
             piece='coalesce summing the scores, with the inverse map',
             where='pyg_lego/nn/graph_power.py _coalesce',
             library='torch_geometric.utils.coalesce(reduce="sum") + '
                     'searchsorted',
             size=union.size(1), tol=1e-5,
             hand=lambda: hand_coalesce_sum_inverse(union, union_scores, n),
             lib=lambda: lib_coalesce_sum_inverse(union, union_scores, n)),
        dict(key='symmetric_given',
             piece='symmetrise a given graph (max of both directions)',
             where='pyg_lego/data/relation.py _symmetric_given',
             library='torch_geometric.utils.to_undirected(reduce="max")',
             size=given.size(1),
             hand=lambda: hand_symmetric_given(given, given_w, n),
             lib=lambda: lib_symmetric_given(given, given_w, n)),
        dict(key='relation_norm',
             piece=f'D^-1/2 R D^-1/2 per view ({views} views), forward '
                   f'and backward',
             where='pyg_lego/nn/norm.py relation_norm',
             library='torch_geometric.nn.conv.gcn_conv.gcn_norm',
             size=pattern.size(1), tol=1e-6,
             hand=lambda: backward(relation_norm)(pattern, scores, n),
             lib=lambda: backward(lib_relation_norm)(pattern, scores, n)),
        dict(key='calibration_row_start',
             piece='row counts and starts of row-sorted edges',
             where='pyg_lego/data/calibration.py neighbour_distances',
             library='torch_geometric.index.index2ptr',
             size=row.numel(),
             hand=lambda: hand_row_start(row, n),
             lib=lambda: lib_row_start(row, n)),
        dict(key='topk_row_start',
             piece='row counts and starts (rows in any order)',
             where='pyg_lego/nn/sparsify.py topk_mask',
             library='torch_geometric.index.index2ptr',
             size=row.numel(),
             hand=lambda: hand_row_start(row, n),
             lib=lambda: lib_row_start(row, n)),
        dict(key='csr_rowptr', piece='CSR row pointer (ids in any order)',
             where='pyg_lego/data/similarity.py csr_rowptr',
             library='torch_geometric.index.index2ptr',
             size=row.numel(),
             hand=lambda: csr_rowptr(row, n),
             lib=lambda: index2ptr(row, n)),
        dict(key='duplicate_check', piece='has duplicate edges',
             where='pyg_lego/data/networkx.py to_networkx_fused',
             library='torch_geometric.utils.coalesce', size=pattern.size(1),
             hand=lambda: hand_has_duplicates(pattern, n),
             lib=lambda: lib_has_duplicates(pattern, n)),
        dict(key='frame_auc', piece='frame ROC AUC (ties in 16-frame runs)',
             where='pyg_lego/vad/metrics.py frame_auc',
             library='sklearn.metrics.roc_auc_score', size=frames, tol=1e-12,
             hand=lambda: hand_auc(s, y), lib=auc_lib),
        dict(key='frame_ap', piece='frame average precision (ties)',
             where='pyg_lego/vad/metrics.py frame_ap',
             library='sklearn.metrics.average_precision_score', size=frames,
             tol=1e-12, hand=lambda: hand_ap(s, y), lib=ap_lib),
    ]


def decide(key: str, ratio: float, exact: bool) -> str:
    if key in REASONS:
        return 'kept (behaviour)'
    if not exact:
        return 'kept (different output)'
    if ratio >= KEEP_RATIO:
        return 'kept (faster)'
    return 'replaced'


def measure(n: int, degree: int, frames: int, views: int, repeat: int,
            only: Optional[List[str]] = None,
            least: float = 0.1) -> List[dict]:
    rows = []
    for p in pieces(n, degree, frames, views):
        if only and p['key'] not in only:
            continue
        hand_s, lib_s, a, b = interleaved(p['hand'], p['lib'], repeat,
                                          least, MOST_CALLS)
        exact = same(a, b, p.get('tol', 0.0))
        ratio = lib_s / hand_s
        rows.append({'key': p['key'], 'piece': p['piece'],
                     'where': p['where'], 'library': p['library'],
                     'size': p['size'], 'hand_s': hand_s, 'lib_s': lib_s,
                     'ratio': ratio, 'same_output': exact,
                     'decision': decide(p['key'], ratio, exact),
                     'reason': REASONS.get(p['key'])})
        print(f"{p['key']}: hand {hand_s:.4f} s, library {lib_s:.4f} s, "
              f"library / hand {ratio:.2f}, same output {exact}",
              file=sys.stderr)
    return rows


def to_markdown(result: dict) -> str:
    meta = result['meta']
    lines = [
        f"Hand-written pieces against library functions, N = "
        f"{meta['N']:,} nodes, {meta['frames']:,} frames, median of "
        f"{meta['repeat']} interleaved samples (each at least "
        f"{meta['least_s']} s of calls), {meta['threads']} thread(s), "
        f"torch {meta['torch']}, PyG {meta['torch_geometric']}, "
        f"scikit-learn {meta['sklearn']}. A hand-written piece stays where "
        f"the library takes at least {meta['keep_ratio']}x its time, or "
        f"for the behavioural reason given.", '',
        '| piece | where | library | size | hand-written (s) | library (s) '
        '| library / hand | same output | decision |',
        '|---|---|---|---|---|---|---|---|---|']
    for r in result['rows']:
        lines.append(
            f"| {r['piece']} | {r['where']} | {r['library']} | "
            f"{r['size']:,} | {r['hand_s']:.4f} | {r['lib_s']:.4f} | "
            f"{r['ratio']:.2f} | {'yes' if r['same_output'] else 'no'} | "
            f"{r['decision']} |")
    reasons = [r for r in result['rows'] if r['reason']]
    if reasons:
        lines += ['', 'Behavioural reasons:', '']
        lines += [f"- {r['piece']}: {r['reason']}." for r in reasons]
    if result.get('unmatched'):
        lines += ['', 'No library function to time against:', '']
        lines += [f"- {u['piece']} ({u['where']}): {u['why']}."
                  for u in result['unmatched']]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('stage', nargs='?', default='measure',
                        choices=('measure', 'render'))
    parser.add_argument('record', nargs='?',
                        help='render: the record to render')
    parser.add_argument('--markdown', help='render: the markdown to write')
    parser.add_argument('--n', type=int, default=100_000)
    parser.add_argument('--degree', type=int, default=20)
    parser.add_argument('--frames', type=int, default=1_000_000)
    parser.add_argument('--views', type=int, default=3)
    parser.add_argument('--repeat', type=int, default=7)
    parser.add_argument('--least', type=float, default=0.1,
                        help='seconds of calls per sample, at least')
    parser.add_argument('--only', nargs='+', help='these pieces only')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = parser.parse_args(argv)
    if args.stage == 'render':
        if not args.record or not args.markdown:
            parser.error('render needs a record and --markdown')
        render_record(args.record, args.markdown, to_markdown)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args.n, args.degree, args.frames, args.views, args.repeat,
                   args.only, args.least)
    result = {'meta': {'N': args.n, 'degree': args.degree,
                       'frames': args.frames, 'views': args.views,
                       'repeat': args.repeat, 'least_s': args.least,
                       'threads': torch.get_num_threads(),
                       'keep_ratio': KEEP_RATIO, 'torch': torch.__version__,
                       'torch_geometric': torch_geometric.__version__,
                       'sklearn': sklearn.__version__,
                       'machine': platform.machine()},
              'rows': rows, 'unmatched': UNMATCHED}
    print(write_record(result, args.out, 'library_replacements',
                       to_markdown))
    return 0


if __name__ == '__main__':
    sys.exit(main())
