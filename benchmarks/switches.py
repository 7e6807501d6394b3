r"""Every module-level switch of :mod:`pyg_lego` that picks a code path by
size, timed with its path taken and not taken, on the same inputs, in one
process (issue 24: a switch stays only where it gains at least
:data:`KEEP_GAIN`, in time or in memory kept for the backward pass).

Each switch is a module constant (a threshold or a cap); "on" sets it so
that the switch's path is always taken, "off" so that it never is. The two
run interleaved (on, off, off, on, ...) after a warm-up call each, and the
median of ``--repeat`` samples is recorded, each sample at least
``--least`` seconds of calls. The outputs of the two paths are compared.
Where a switch bounds memory, the bytes autograd saves for the backward
pass are recorded too (:func:`saved_bytes`).

Constants that are sizes (a block, a chunk, a prefetch distance) rather
than a choice between two paths, and those that change results, are listed
with the reason they stay (:data:`OTHERS`); the prefetch distances have
their own record (``prefetch.md``).

    python benchmarks/switches.py                 # measure (a few minutes)
    python benchmarks/switches.py --scale 0.02    # tiny sizes (the tests)
    python benchmarks/switches.py render \
        benchmarks/results/switches.json --markdown OUT.md
    python benchmarks/switches.py sync benchmarks/results/switches.json

writes ``switches.json`` and ``switches.md`` under ``--out`` (default
``benchmarks/results``). A run with ``--only`` into a record that exists
there replaces only its own rows (the record's settings must match) and
keeps the others and the value-reading checks as recorded.
"""
import argparse
import json
import math
import os
import platform
import sys
from typing import Callable, Dict, List, Optional

import torch
import torch_geometric

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # pyg_lego, uninstalled
sys.path.insert(0, HERE)  # timing, where loaded from elsewhere

from pyg_lego.data import knn as knn_module  # noqa: E402
from pyg_lego.data import relation  # noqa: E402
from pyg_lego.data.backends import KNNResult  # noqa: E402
from pyg_lego.data.validation import (all_finite, check_edge_index,  # noqa
                                      edge_facts)
from pyg_lego.nn import fusion, graph_power, locality, sparsify  # noqa: E402
from pyg_lego.nn.fusion import LEGOFusion  # noqa: E402
from pyg_lego.nn.graph_power import GraphPowerConv  # noqa: E402
from scale import make_views  # noqa: E402
from timing import interleaved, render_record, write_record  # noqa: E402

#: A switch stays where its path takes at most 1 / KEEP_GAIN of the time
#: (or of the saved memory) of the other: at least 10% gain.
KEEP_GAIN = 1.10

#: Most calls of a path per timed sample.
MOST_CALLS = 256

#: Nodes of the relabel_masked piece's kNN graph at scale 1: about 1M
#: edges, well above RELABEL_MIN_EDGES.
MASKED_NODES = 26_000

#: Constants that are not a choice between two paths, and why they stay.
OTHERS: List[Dict[str, str]] = [
    {'module': 'pyg_lego/data/backends.py',
     'constant': 'AUTO_EXACT_CPU, AUTO_EXACT_GPU',
     'what': "backend='auto': exact kNN while N^2 d is below them, "
             "approximate beyond",
     'why': 'behaviour: an approximate search returns other edges, so the '
            'two paths differ in output, not only in time'},
    {'module': 'pyg_lego/numba_runtime.py', 'constant': 'TBB_MIN_INTERFACE',
     'what': 'oldest TBB that numba may use as its threading layer',
     'why': 'compatibility: older TBB builds crash numba'},
    {'module': 'pyg_lego/nn/masked_numba.py',
     'constant': 'PATH_AHEAD, WALK_AHEAD, PREFETCH_DISTANCE',
     'what': 'how far ahead the numba kernels prefetch',
     'why': 'distances, not switches; with the hint / without it is '
            'recorded in benchmarks/results/prefetch.md'},
    {'module': 'pyg_lego/nn/graph_power.py', 'constant': 'DEFAULT_PATH_BUDGET',
     'what': "default of GraphPowerConv's memory_budget",
     'why': 'memory bound: the stored path index is kept within it (its '
            'time against walking is the path_budget row)'},
    {'module': 'pyg_lego/nn/path_index.py', 'constant': 'DEFAULT_PATH_CHUNK',
     'what': 'candidates per chunk of the torch path enumeration',
     'why': 'memory bound of one chunk'},
    {'module': 'pyg_lego/nn/fusion.py', 'constant': 'CP_CHUNK',
     'what': 'factor elements per chunk of the chunked CP fusion',
     'why': 'size of a chunk once chunked (CP_CHUNK_ELEMENTS is the switch)'},
    {'module': 'pyg_lego/data/knn.py',
     'constant': 'DEFAULT_BLOCK_BYTES, DEFAULT_GPU_BLOCK_BYTES, '
                 'CACHE_BLOCK_BYTES, MIN_BLOCK_ROWS',
     'what': 'rows per block of the exact kNN scores',
     'why': 'memory bound of one block of scores'},
    {'module': 'pyg_lego/data/backends.py', 'constant': 'QUERY_BLOCK',
     'what': 'queries per call of an approximate index',
     'why': 'memory bound of one query block'},
    {'module': 'pyg_lego/nn/locality.py', 'constant': 'LEAF_SIZE',
     'what': 'group size that locality_order leaves in input order',
     'why': 'a parameter of the order, not a path'},
]


def ring_graph(n: int, half: int, seed: int = 0) -> torch.Tensor:
    r"""A coalesced symmetric graph with self-loops, each node joined to the
    :obj:`half` nodes either side of it on a ring, the nodes numbered at
    random (as a kNN graph's are: neighbours far apart in the numbering)."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    i = torch.arange(n).repeat_interleave(2 * half + 1)
    off = torch.arange(-half, half + 1).repeat(n)
    ei = torch.stack([perm[i], perm[(i + off) % n]])
    key = torch.unique(ei[0] * n + ei[1])
    return torch.stack([key // n, key % n])


def knn_graph(n: int, seed: int = 0) -> torch.Tensor:
    r"""The benchmark's kNN pattern (as ``locality.py`` and ``scale.py``
    build it: 3 clustered views of width 128, k = 16, exact search, the
    union with self-loops, by :func:`~pyg_lego.data.knn_pattern`), its nodes
    numbered at random."""
    views = make_views(n, 3, 128, seed=seed)
    ei = relation.knn_pattern(views, k=16, backend='exact')
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    key = torch.unique(perm[ei[0]] * n + perm[ei[1]])
    return torch.stack([key // n, key % n])


def block_graph(blocks: int, size: int) -> torch.Tensor:
    r"""A disjoint union of complete graphs of :obj:`size` nodes with
    self-loops, as PyG batches them."""
    idx = torch.arange(blocks * size * size)
    row = idx // size
    return torch.stack([row, (row // size) * size + idx % size])


def saved_bytes(fn: Callable) -> int:
    r"""Bytes of the distinct tensors autograd saves for the backward pass
    during :obj:`fn` (a forward)."""
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def patched(settings: List[tuple], fn: Callable) -> Callable:
    r""":obj:`fn` run with the module attributes :obj:`settings`
    (module, name, value) set, and restored after."""
    def run():
        old = [getattr(m, name) for m, name, _ in settings]
        for m, name, value in settings:
            setattr(m, name, value)
        try:
            return fn()
        finally:
            for (m, name, _), value in zip(settings, old):
                setattr(m, name, value)
    return run


def grad_of(fn: Callable, *inputs: torch.Tensor) -> Callable:
    r"""Forward and backward: the output and the inputs' gradients."""
    def run():
        leaves = [x.detach().requires_grad_() for x in inputs]
        out = fn(*leaves)
        out.backward(torch.ones_like(out))
        return [out.detach()] + [x.grad for x in leaves]
    return run


def max_difference(a, b) -> float:
    r"""Largest absolute difference of two outputs (lists of tensors, or
    tensors); 0.0 where they are equal."""
    if isinstance(a, (list, tuple)):
        return max((max_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if a.dtype == torch.bool or not a.is_floating_point():
        return 0.0 if torch.equal(a, b) else math.inf
    return float((a - b).abs().max()) if a.numel() else 0.0


INF = math.inf


def pieces(scale: float) -> List[dict]:
    r"""Each switch: what it is, and its piece of the pipeline with the
    switch's path taken (:obj:`on`) and not (:obj:`off`)."""
    def size(n: int, least: int = 64) -> int:
        return max(least, int(n * scale))

    gen = torch.Generator().manual_seed(1)
    out = []

    # TopKSparsify's per-row ranking: padded table vs two global sorts.
    n = size(50_000)
    ei = ring_graph(n, 10)
    w = torch.rand(ei.size(1), 1, generator=gen)

    def topk(ei=ei, w=w, n=n):
        return sparsify.topk_mask(ei, w, 10, n)
    out.append(dict(
        key='sparsify_padded', piece='TopKSparsify (k = 10)',
        module='pyg_lego/nn/sparsify.py', constant='PADDED_MAX_FILL',
        value=sparsify.PADDED_MAX_FILL,
        what='per-row sort in a padded [N, max degree] table (on) vs two '
             'stable sorts of all edges (off)',
        size=f'N = {n:,}, {ei.size(1):,} edges',
        on=patched([(sparsify, 'PADDED_MAX_FILL', INF)], topk),
        off=patched([(sparsify, 'PADDED_MAX_FILL', 0)], topk)))

    # CP fusion: edge chunks recomputed in backward vs one factor tensor.
    e = size(1_000_000)
    x = torch.rand(e, 3, 3, generator=gen)
    cp = LEGOFusion(3, 2, kind='polynomial', rank=4)
    cp_run = grad_of(lambda x: cp(x), x)
    out.append(dict(
        key='cp_chunked', piece='LEGOFusion CP, rank 4, M = 3, P = 2, '
                                'forward + backward',
        module='pyg_lego/nn/fusion.py', constant='CP_CHUNK_ELEMENTS',
        value=fusion.CP_CHUNK_ELEMENTS,
        what='edge chunks, factors recomputed in the backward pass (on) vs '
             'one [E, C, rank, M] factor tensor saved (off)',
        size=f'{e:,} edges',
        on=patched([(fusion, 'CP_CHUNK_ELEMENTS', 0)], cp_run),
        off=patched([(fusion, 'CP_CHUNK_ELEMENTS', INF)], cp_run),
        memory=lambda s: patched(
            [(fusion, 'CP_CHUNK_ELEMENTS', s)],
            lambda: saved_bytes(lambda: cp(x.detach().requires_grad_())))()))

    # Masked power of complete blocks: batched T x T products vs paths.
    for blocks, t in ((size(64, 2), 64), (max(1, size(4, 1)), 256)):
        if not hasattr(graph_power, 'MAX_DENSE_BLOCK'):
            break  # Removed: measured at the commit before its removal.
        bei = block_graph(blocks, t)
        a = torch.rand(bei.size(1), 2, generator=gen)
        conv = GraphPowerConv(3)
        run = grad_of(lambda a, bei=bei, conv=conv: conv(bei, a), a)
        out.append(dict(
            key=f'dense_blocks_T{t}',
            piece=f'GraphPowerConv masked, P = 3, M = 2, forward + '
                  f'backward, blocks of T = {t}',
            module='pyg_lego/nn/graph_power.py', constant='MAX_DENSE_BLOCK',
            value=getattr(graph_power, 'MAX_DENSE_BLOCK', None),
            what='batched T x T products (on) vs the two-step paths (off)',
            size=f'{blocks} x T = {t}, {bei.size(1):,} edges',
            on=patched([(graph_power, 'MAX_DENSE_BLOCK', INF)], run),
            off=patched([(graph_power, 'MAX_DENSE_BLOCK', 0)], run)))

    # Masked power by numba on a pattern relabelled per call vs as
    # numbered, on a kNN graph of about 1M edges (the graph built once,
    # outside the timed calls). Removed: an uncached conv no longer takes
    # the path (0.58x, its recorded row, which stays as it is).
    kn = size(MASKED_NODES)
    kei = knn_graph(kn, seed=2)
    kgen = torch.Generator().manual_seed(2)
    ka = torch.rand(kei.size(1), 3, generator=kgen)
    conv = GraphPowerConv(3)
    masked = grad_of(lambda a, ei=kei, n=kn: conv(ei, a, num_nodes=n), ka)
    relabel = dict(
        module='pyg_lego/nn/locality.py', constant='RELABEL_MIN_EDGES',
        value=locality.RELABEL_MIN_EDGES,
        size=f'kNN graph (3 views, k = 16, random numbering), N = {kn:,}, '
             f'{kei.size(1):,} edges')
    out.append(dict(
        key='relabel_masked', piece='GraphPowerConv masked (numba), P = 3, '
                                    'M = 3, forward + backward',
        what='locality relabelling of the pattern (on) vs its input '
             'numbering (off)', **relabel,
        on=patched([(locality, 'RELABEL_MIN_EDGES', 0)], masked),
        off=patched([(locality, 'RELABEL_MIN_EDGES', INF)], masked),
        removed=True))

    # The same with cached=True: one conv per side, whose pattern (and its
    # relabelling or not) is built at its first call, the warm-up, under
    # that side's threshold, and reused by the timed calls.
    sides = {}
    for side, threshold in (('on', 0), ('off', INF)):
        cached = GraphPowerConv(3, mode='masked', kernel='numba', cached=True)
        sides[side] = patched(
            [(locality, 'RELABEL_MIN_EDGES', threshold)],
            grad_of(lambda a, ei=kei, n=kn, conv=cached:
                    conv(ei, a, num_nodes=n), ka))
    out.append(dict(
        key='relabel_masked_cached',
        piece='GraphPowerConv masked (numba), cached=True, P = 3, M = 3, '
              'forward + backward',
        what='locality relabelling of the pattern, built once and reused '
             '(on) vs its input numbering (off)', **relabel,
        on=sides['on'], off=sides['off']))

    # The stored path index vs walking the pattern (memory_budget = 0).
    n = size(64_000)
    ei = ring_graph(n, 8, seed=2)
    a = torch.rand(ei.size(1), 3, generator=gen)
    stored = GraphPowerConv(3)
    walked = GraphPowerConv(3, memory_budget=0)
    out.append(dict(
        key='path_budget', piece='GraphPowerConv masked (numba), P = 3, '
                                 'M = 3, forward + backward',
        module='pyg_lego/nn/graph_power.py',
        constant='DEFAULT_PATH_BUDGET', value=graph_power.DEFAULT_PATH_BUDGET,
        what='paths enumerated and stored within the budget (on) vs walked '
             'with nothing stored (off, memory_budget=0)',
        size=f'N = {n:,}, {ei.size(1):,} edges',
        on=grad_of(lambda a, ei=ei, n=n: stored(ei, a, num_nodes=n), a),
        off=grad_of(lambda a, ei=ei, n=n: walked(ei, a, num_nodes=n), a)))

    # Propagated mode on relabelled features vs as numbered, on a kNN
    # graph (built once, outside the timed calls).
    n = size(64_000)
    ei = knn_graph(n, seed=3)
    pgen = torch.Generator().manual_seed(3)
    a = torch.rand(ei.size(1), 3, generator=pgen)
    xs = [torch.randn(n, 128, generator=pgen) for _ in range(3)]
    prop = GraphPowerConv(2, mode='propagated')
    propagated = grad_of(lambda a, ei=ei, xs=xs: prop(ei, a, xs=xs), a)
    out.append(dict(
        key='relabel_propagated', piece='GraphPowerConv propagated, P = 2, '
                                        '3 views x 128, forward + backward',
        module='pyg_lego/nn/locality.py',
        constant='RELABEL_MIN_FEATURE_BYTES',
        value=locality.RELABEL_MIN_FEATURE_BYTES,
        what='features and pattern relabelled per call (on) vs as numbered '
             '(off)',
        size=f'kNN graph (3 views, k = 16, random numbering), N = {n:,}, '
             f'{ei.size(1):,} edges, {xs[0].numel() * 4 / 2**20:.1f} MiB '
             f'per view',
        on=patched([(locality, 'RELABEL_MIN_EDGES', 0),
                    (locality, 'RELABEL_MIN_FEATURE_BYTES', 0)], propagated),
        off=patched([(locality, 'RELABEL_MIN_FEATURE_BYTES', INF)],
                    propagated)))

    # Exact kNN: the compiled top-k loop vs torch's top-k.
    from pyg_lego import numba_runtime
    n = size(8192, 600)
    z = torch.randn(n, 64, generator=gen)

    def search(z=z):
        return knn_module.exact_knn(z, 16)
    if numba_runtime.available():
        out.append(dict(
            key='compiled_topk', piece='exact kNN, k = 16, one view of 64',
            module='pyg_lego/data/knn.py',
            constant='COMPILED_MIN_SCORES, COMPILED_MIN_NODES',
            value=f'{knn_module.COMPILED_MIN_SCORES}, '
                  f'{knn_module.COMPILED_MIN_NODES}',
            what='compiled top-k selection (on) vs torch top-k (off), once '
                 'the loop is loaded',
            size=f'N = {n:,}',
            on=patched([(knn_module, 'COMPILED_MIN_SCORES', 0),
                        (knn_module, 'COMPILED_MIN_NODES', 0)], search),
            off=patched([(knn_module, 'COMPILED_MIN_SCORES', INF)], search)))

    # The block top-k's group-maximum stage vs one top-k of the rows.
    rows, cols = size(2048, 64), size(32_768, 4096)
    s = torch.rand(rows, cols, generator=gen)

    def grouped():
        return knn_module.block_topk(s, 16).sort(1)[0]

    def plain():
        return s.topk(16, dim=1).indices.sort(1)[0]
    out.append(dict(
        key='topk_group', piece='top-16 of a block of kNN scores',
        module='pyg_lego/data/knn.py', constant='TOPK_GROUP',
        value=knn_module.TOPK_GROUP,
        what='top-k of the group maxima first (on) vs one top-k of each '
             'row (off)',
        size=f'{rows:,} x {cols:,} scores', on=grouped, off=plain))

    # The union's scores: reusing the searches' similarities vs computing
    # all of them (the searches themselves are replayed, not timed).
    n = size(64_000)
    views = {f'v{m}': torch.randn(n, 64, generator=gen) for m in range(3)}
    found = {}
    for m, (name, v) in enumerate(views.items()):
        unit = torch.nn.functional.normalize(v, dim=1)
        g = ring_graph(n, 8, seed=10 + m)
        g = g[:, g[0] != g[1]]
        found[id(v)] = KNNResult(g, 'exact', None,
                                 (unit[g[0]] * unit[g[1]]).sum(-1))

    def build():
        data = relation.build_relation_graph(views, k=16, backend='exact')
        return [data.edge_index, data.edge_attr]
    replay = [(relation, 'knn_search',
               lambda v, *args, **kwargs: found[id(v)])]
    out.append(dict(
        key='reuse_scores', piece='build_relation_graph after the kNN '
                                  'searches (union + scores), 3 views x 64',
        module='pyg_lego/data/relation.py', constant='REUSE_MIN_EDGES',
        value=relation.REUSE_MIN_EDGES,
        what="the searches' similarities reused, each edge pair scored once "
             "(on) vs every score computed (off)",
        size=f'N = {n:,}, {3 * 2 * found[id(views["v0"])].edge_index.size(1) + n:,} '
             f'input edges',
        on=patched(replay + [(relation, 'REUSE_MIN_EDGES', 0)], build),
        off=patched(replay + [(relation, 'REUSE_MIN_EDGES', INF)], build)))
    return out


def sync_checks(scale: float, repeat: int, least: float) -> dict:
    r"""The checks of :class:`GraphPowerConv`'s forward that read tensor
    values (each a device synchronisation on a GPU), timed alone against
    the whole forward, on a graph as :func:`build_relation_graph` returns
    it."""
    n = max(64, int(64_000 * scale))
    ei = ring_graph(n, 8, seed=2)
    a = torch.rand(ei.size(1), 3)
    conv = GraphPowerConv(2)

    def checks():  # as the forward read them on every call before
        lo, hi = int(ei.min()), int(ei.max())
        key = ei[0] * n + ei[1]
        return (lo, hi, int(ei.max()), bool(torch.isfinite(a).all()),
                bool((key[1:] > key[:-1]).all()))

    def known():  # the same, for tensors read once already
        check_edge_index(ei, n)
        return edge_facts(ei), all_finite(a)

    with torch.no_grad():
        checks_s, forward_s, _, _ = interleaved(
            checks, lambda: conv(ei, a, num_nodes=n), repeat, least,
            MOST_CALLS)
        known_s, _, _, _ = interleaved(known, checks, repeat, least,
                                       MOST_CALLS)
    return {'size': f'N = {n:,}, {ei.size(1):,} edges, M = 3',
            'checks_s': checks_s, 'forward_s': forward_s,
            'share': checks_s / forward_s, 'reads': 5, 'known_s': known_s}


#: Rows decided by more than their own gain.
OVERRIDES: Dict[str, Callable[[float], str]] = {
    # Blocks above the cap took the paths: where the dense path gains at
    # the largest T measured too, the cap goes.
    'dense_blocks_T256': lambda g: 'remove the cap (dense at every T)'
    if g >= KEEP_GAIN else 'keep the cap',
    # The default of an argument: the torch kernel (CUDA) streams its paths
    # beyond it, recomputing them for every order.
    'path_budget': lambda g: 'keep (memory bound of the torch kernel)',
    # The masked power relabels only where the relabelling is reused (a
    # cached conv, relabel_masked_cached); per call it runs as numbered.
    'relabel_masked': lambda g: 'keep (time)' if g >= KEEP_GAIN else
    'remove per call (taken cached only)',
    'relabel_masked_cached': lambda g: 'keep (cached only)'
    if g >= KEEP_GAIN else 'remove',
}


def decide(gain: float, memory_gain: Optional[float], key: str = '') -> str:
    if key in OVERRIDES:
        return OVERRIDES[key](gain)
    if gain >= KEEP_GAIN:
        return 'keep (time)'
    if memory_gain is not None and memory_gain >= KEEP_GAIN:
        return 'keep (memory)'
    return 'remove'


def measure(scale: float, repeat: int, least: float,
            only: Optional[List[str]] = None) -> List[dict]:
    rows = []
    for p in pieces(scale):
        if only and p['key'] not in only or p.get('removed'):
            continue
        on_s, off_s, a, b = interleaved(p['on'], p['off'], repeat, least,
                                        MOST_CALLS)
        gain = off_s / on_s
        row = {k: p[k] for k in ('key', 'piece', 'module', 'constant',
                                 'what', 'size')}
        row.update(value=str(p['value']), on_s=on_s, off_s=off_s, gain=gain,
                   max_difference=max_difference(a, b))
        memory_gain = None
        if 'memory' in p:
            row['saved_on'] = p['memory'](0)
            row['saved_off'] = p['memory'](INF)
            memory_gain = row['saved_off'] / max(1, row['saved_on'])
        row['memory_gain'] = memory_gain
        row['decision'] = decide(gain, memory_gain, row['key'])
        rows.append(row)
        print(f"{p['key']}: on {on_s:.4f} s, off {off_s:.4f} s, gain "
              f"{gain:.2f}, memory {memory_gain}, difference "
              f"{row['max_difference']:.3g}", file=sys.stderr)
    return rows


def _bytes(b: Optional[int]) -> str:
    return '' if b is None else f'{b / 2**20:.1f} MiB'


def to_markdown(result: dict) -> str:
    meta = result['meta']
    lines = [
        f"Each switch with its path taken (on) and not (off), same inputs, "
        f"median of {meta['repeat']} interleaved samples (each at least "
        f"{meta['least_s']} s of calls), {meta['threads']} thread(s), "
        f"{meta['machine']}, torch {meta['torch']}, PyG "
        f"{meta['torch_geometric']}. Gain: time off / time on (saved "
        f"memory off / on where the switch bounds memory). A switch stays "
        f"where it gains at least {meta['keep_gain']:.2f}x.", '',
        '| key | piece | module | constant | value | what it switches | size '
        '| on (s) | off (s) | gain | saved for backward on / off | max '
        'difference | decision |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in result['rows']:
        memory = '' if r.get('memory_gain') is None else \
            f"{_bytes(r['saved_on'])} / {_bytes(r['saved_off'])}"
        lines.append(
            f"| {r['key']} | {r['piece']} | {r['module']} | "
            f"{r['constant']} | {r['value']} | {r['what']} | {r['size']} | "
            f"{r['on_s']:.4f} | {r['off_s']:.4f} | {r['gain']:.2f} | "
            f"{memory} | {r['max_difference']:.2g} | {r['decision']} |")
    sync = result.get('sync')
    if sync:
        lines += [
            '', f"Value-reading checks of GraphPowerConv's forward "
            f"({sync['reads']} reads: edge ids' min and max, num_nodes, "
            f"finite scores, coalesced order; each a device synchronisation "
            f"on a GPU), {sync['size']}: {sync['checks_s'] * 1e3:.2f} ms "
            f"against {sync['forward_s'] * 1e3:.1f} ms for the masked "
            f"forward (P = 2, no grad), {100 * sync['share']:.1f}%. Read "
            f"once per tensor now (at build_relation_graph, or by the first "
            f"forward): {sync['known_s'] * 1e6:.0f} us per forward for a "
            f"tensor read before, no device synchronisation."]
    lines += ['', 'Not switches between two paths, and why they stay:', '']
    lines += [f"- `{o['constant']}` ({o['module']}): {o['what']}; "
              f"{o['why']}." for o in result['others']]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('stage', nargs='?', default='measure',
                        choices=('measure', 'render', 'sync'))
    parser.add_argument('record', nargs='?',
                        help='render: the record to render; sync: the '
                             'record whose checks to measure again')
    parser.add_argument('--markdown', help='render: the markdown to write')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='sizes relative to the default ones')
    parser.add_argument('--repeat', type=int, default=7)
    parser.add_argument('--least', type=float, default=0.2,
                        help='seconds of calls per sample, at least')
    parser.add_argument('--only', nargs='+', help='these switches only')
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
    if args.stage == 'sync':
        with open(args.record) as f:
            result = json.load(f)
        result['sync'] = sync_checks(args.scale, args.repeat, args.least)
        for row in result['rows']:
            row['decision'] = decide(row['gain'], row['memory_gain'],
                                     row['key'])
        print(write_record(result,
                           os.path.dirname(os.path.abspath(args.record)),
                           'switches', to_markdown))
        return 0
    meta = {'scale': args.scale, 'repeat': args.repeat,
            'least_s': args.least, 'threads': torch.get_num_threads(),
            'keep_gain': KEEP_GAIN, 'torch': torch.__version__,
            'torch_geometric': torch_geometric.__version__,
            'machine': platform.machine()}
    record = os.path.join(args.out, 'switches.json')
    old = None
    if args.only and os.path.exists(record):
        with open(record) as f:
            old = json.load(f)
        differ = [k for k in meta if old['meta'].get(k) != meta[k]]
        if differ:
            parser.error(f"--only merges into {record}, measured with other "
                         f"settings ({', '.join(differ)}); measure all of "
                         f"it, or write elsewhere with --out")
    rows = measure(args.scale, args.repeat, args.least, args.only)
    if old is None:
        result = {'meta': meta, 'rows': rows,
                  'sync': sync_checks(args.scale, args.repeat, args.least),
                  'others': OTHERS}
    else:
        result = merge(old, rows)
    print(write_record(result, args.out, 'switches', to_markdown))
    return 0


def merge(result: dict, rows: List[dict]) -> dict:
    r"""The record :obj:`result` with the rows of a partial run
    (``--only``) in place of those of the same keys (new keys appended),
    its other rows and value-reading checks as recorded, and every
    decision taken again."""
    new = {r['key']: r for r in rows}
    merged = [new.pop(r['key'], r) for r in result['rows']]
    merged += [r for r in rows if r['key'] in new]
    for row in merged:
        row['decision'] = decide(row['gain'], row['memory_gain'], row['key'])
    return dict(result, rows=merged, others=OTHERS)


if __name__ == '__main__':
    sys.exit(main())
