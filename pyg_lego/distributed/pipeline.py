r"""The partitioned pipeline as a job of :math:`W` processes
(``python -m pyg_lego.distributed``, one process per rank, e.g. under
``torchrun``): each rank loads (or generates) its rows of every view, builds
its rows of the kNN pattern and their scores, expands them into graph powers
and fuses them, and writes every stage's shard to an output folder; with
``--until train`` it then trains the fusion and a GCN head jointly for node
classification over the partitioned fused graph
(:func:`~pyg_lego.distributed.partitioned_train_step`).

.. code-block:: bash

    torchrun --nproc_per_node=4 -m pyg_lego.distributed \
        --synthetic 100000 --k 16 --out shards/
    torchrun --nproc_per_node=4 -m pyg_lego.distributed \
        --synthetic 100000 --k 16 --until train --epochs 200 --out shards/

Every shard is written atomically (a temporary file, then
:func:`os.replace`), and each rank keeps a manifest of the shards it has
with the hash of the configuration that made them; ``--resume`` reuses
every stage whose shards all ranks hold with a matching hash.

A failure on one rank ends the job on all of them: a rank that raises writes
the error to the job's store before it exits, and a watchdog thread on every
rank, which polls the store, stops the others with that message; a rank that
dies or hangs leaves the others in a collective, which times out after
``--timeout`` seconds (gloo's own timeout), and they name the ranks that
stopped answering (the job's store keeps a heartbeat of every rank).
"""
import argparse
import datetime
import hashlib
import json
import os
import resource
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from pyg_lego.data.similarity import SCORE_MAPS, SIMILARITIES
from pyg_lego.distributed.expansion import (PartitionedLEGO,
                                            partitioned_graph_powers)
from pyg_lego.distributed.halo import CommStats, record
from pyg_lego.distributed.knn import partition_sizes, partitioned_pattern
from pyg_lego.distributed.relation import partitioned_relation_scores
from pyg_lego.distributed.training import (PartitionedGCN,
                                           PartitionedNodeClassifier,
                                           partitioned_train_step)
from pyg_lego.nn.graph_power import MODES

#: The stages, in order, and the tensors each one writes to its shard.
STAGES = ('pattern', 'scores', 'powers', 'fusion', 'train')
OUTPUTS = {'pattern': 'edge_index', 'scores': 'edge_attr',
           'powers': 'powers', 'fusion': 'fused', 'train': 'state'}
#: The tensors each stage reads (the training fuses the powers itself, from
#: the fusion's initial parameters).
INPUTS = {'pattern': ('views', ), 'scores': ('views', 'edge_index'),
          'powers': ('edge_index', 'edge_attr'), 'fusion': ('powers', ),
          'train': ('views', 'edge_index', 'powers')}
#: Options that change each stage's output (with those of the stages
#: before it, whose hash it includes).
STAGE_OPTIONS = {
    'pattern': ('k', 'similarity', 'memory_budget'),
    'scores': ('score_map', 'gamma'),
    'powers': ('P', 'mode', 'order0'),
    'fusion': ('fusion', 'out_channels', 'cp_rank', 'seed', 'state'),
    'train': ('epochs', 'lr', 'hidden_channels', 'layers', 'labels',
              'train_fraction', 'train_dtype'),
}
#: Rows of one seeded chunk of the synthetic views: rank r generates only
#: the chunks its rows overlap, the same rows whatever W is.
SYNTHETIC_CHUNK = 4096
SYNTHETIC_CLUSTERS = 32
#: How often the watchdog beats and polls the store, in seconds.
POLL_S = 0.25
PROG = 'python -m pyg_lego.distributed'


@dataclass
class PipelineConfig:
    r"""What a job computes. Every rank of a job must be given the same
    configuration (its hash is compared on resume).

    Args:
        views (list of (str, str)): View name and path pattern of its
            ``.npy`` rows, with ``{rank}`` in the pattern (rank :math:`r`
            loads its rows :math:`(n_r, d_m)`); empty with
            :obj:`synthetic`. (default: :obj:`[]`)
        synthetic (int, optional): Generate :obj:`synthetic` nodes instead,
            split evenly over the ranks. (default: :obj:`None`)
        synthetic_dims (list of int): The widths of the synthetic views.
            (default: :obj:`[32, 24, 16]`)
        k (int): Neighbours per node and view. (default: :obj:`10`)
        similarity (str): :obj:`"cosine"`, :obj:`"dot"` or :obj:`"rbf"`.
            (default: :obj:`"cosine"`)
        score_map (str): See :func:`~pyg_lego.build_relation_graph`.
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth. (default: :obj:`None`)
        P (int): Highest graph power. (default: :obj:`2`)
        mode (str): :obj:`"masked"`, :obj:`"propagated"` or
            :obj:`"elementwise"`. (default: :obj:`"masked"`)
        order0 (str): Element-wise order 0. (default: :obj:`"self"`)
        fusion (str): :obj:`"linear"` or :obj:`"polynomial"`.
            (default: :obj:`"linear"`)
        out_channels (int): Fused graphs :math:`C`. (default: :obj:`1`)
        cp_rank (int, optional): CP rank of the polynomial fusion.
            (default: :obj:`None`)
        seed (int): Seed of the synthetic views and of the fusion's
            initial parameters. (default: :obj:`0`)
        state (str, optional): A state dict of :class:`~pyg_lego.LEGO` or
            :class:`PartitionedLEGO` (e.g. trained) for the fusion.
            (default: :obj:`None`)
        memory_budget (int, optional): Bytes of one block of kNN scores.
            (default: :obj:`None`)
        epochs (int): Training epochs (full-graph Adam steps) of the
            ``train`` stage. (default: :obj:`100`)
        lr (float): Adam's learning rate. (default: :obj:`0.01`)
        hidden_channels (int): Hidden width of the GCN head.
            (default: :obj:`64`)
        layers (int): GCN layers. (default: :obj:`2`)
        labels (str, optional): Path pattern of each rank's classes, with
            ``{rank}`` in it: a 1-D integer ``.npy`` array of :math:`n_r`
            classes, :obj:`-1` where a node is unlabelled (needed by the
            ``train`` stage with :obj:`views`; synthetic rows carry their
            clusters as classes). (default: :obj:`None`)
        train_fraction (float): With :obj:`synthetic`, the fraction of the
            nodes in the seeded train mask. (default: :obj:`0.5`)
        train_dtype (str): :obj:`"float32"` or :obj:`"float64"`: the
            training's dtype (features, powers and parameters are cast to
            it). (default: :obj:`"float32"`)
    """
    views: List[Tuple[str, str]] = field(default_factory=list)
    synthetic: Optional[int] = None
    synthetic_dims: List[int] = field(default_factory=lambda: [32, 24, 16])
    k: int = 10
    similarity: str = 'cosine'
    score_map: str = 'auto'
    gamma: Optional[float] = None
    P: int = 2
    mode: str = 'masked'
    order0: str = 'self'
    fusion: str = 'linear'
    out_channels: int = 1
    cp_rank: Optional[int] = None
    seed: int = 0
    state: Optional[str] = None
    memory_budget: Optional[int] = None
    epochs: int = 100
    lr: float = 0.01
    hidden_channels: int = 64
    layers: int = 2
    labels: Optional[str] = None
    train_fraction: float = 0.5
    train_dtype: str = 'float32'

    @property
    def view_names(self) -> List[str]:
        if self.synthetic is not None:
            return [f'v{m}' for m in range(len(self.synthetic_dims))]
        return [name for name, _ in self.views]


def even_sizes(num_nodes: int, world: int) -> List[int]:
    r"""Rows of each rank when :obj:`num_nodes` are split evenly (the first
    :math:`N \bmod W` ranks hold one more)."""
    return [num_nodes // world + (r < num_nodes % world)
            for r in range(world)]


def _chunk_classes(seed: int, chunk: int, rows: int) -> Tensor:
    # Labels depend on the chunk only: shared by all views.
    return torch.randint(SYNTHETIC_CLUSTERS, (rows, ),
                         generator=torch.Generator().manual_seed(
                             seed * 7919 + chunk))


def _check_rows(num_nodes: int, lo: int, hi: int) -> None:
    if not 0 <= lo < hi <= num_nodes:
        raise ValueError(f"rows [{lo}, {hi}) are not within N = {num_nodes}")


def synthetic_classes(num_nodes: int, seed: int, lo: int, hi: int,
                      train_fraction: float = 0.5) -> Tuple[Tensor, Tensor]:
    r"""The classes of rows :math:`lo, \dots, hi - 1` of
    :func:`synthetic_rows` (each node's cluster, :math:`0, \dots, 31`) and a
    seeded train mask that holds each node with probability
    :obj:`train_fraction`; neither depends on how the nodes are split.

    Returns:
        :obj:`(y, train_mask)`: :math:`(hi - lo)` long and bool tensors.
    """
    _check_rows(num_nodes, lo, hi)
    ys, masks = [], []
    first, last = lo // SYNTHETIC_CHUNK, (hi - 1) // SYNTHETIC_CHUNK
    for c in range(first, last + 1):
        rows = min(SYNTHETIC_CHUNK, num_nodes - c * SYNTHETIC_CHUNK)
        ys.append(_chunk_classes(seed, c, rows))
        masks.append(torch.rand(rows, generator=torch.Generator().manual_seed(
            seed * 7919 + c + 1_000_000_007)) < train_fraction)
    a, b = lo - first * SYNTHETIC_CHUNK, hi - first * SYNTHETIC_CHUNK
    return torch.cat(ys)[a:b].contiguous(), torch.cat(masks)[a:b].contiguous()


def synthetic_rows(num_nodes: int, dims: Sequence[int], seed: int, lo: int,
                   hi: int) -> Dict[str, Tensor]:
    r"""Rows :math:`lo, \dots, hi - 1` of synthetic multi-view features:
    every node belongs to one of 32 clusters, the same in every view, and
    each view places it at its cluster's centre plus Gaussian noise (the
    clusters are the classes of
    ``pyg_lego.distributed.pipeline.synthetic_classes``).

    Args:
        num_nodes (int): All nodes :math:`N`.
        dims (list of int): The width :math:`d_m` of each view.
        seed (int): The seed; the rows do not depend on how the nodes are
            split.
        lo (int): First row.
        hi (int): One past the last row.

    Returns:
        View name (``v0``, ``v1``, ...) -> rows :math:`(hi - lo, d_m)`,
        float32.
    """
    _check_rows(num_nodes, lo, hi)
    out = {}
    first, last = lo // SYNTHETIC_CHUNK, (hi - 1) // SYNTHETIC_CHUNK
    for m, d in enumerate(dims):
        centres = torch.randn(SYNTHETIC_CLUSTERS, d, generator=torch.Generator(
            ).manual_seed(seed * 1000003 + m))
        parts = []
        for c in range(first, last + 1):
            start = c * SYNTHETIC_CHUNK
            rows = min(SYNTHETIC_CHUNK, num_nodes - start)
            labels = _chunk_classes(seed, c, rows)
            noise = torch.randn(rows, d, generator=torch.Generator(
                ).manual_seed((seed * 1000003 + m) * 65537 + c))
            parts.append(centres[labels] + noise)
        block = torch.cat(parts)
        out[f'v{m}'] = block[lo - first * SYNTHETIC_CHUNK:
                             hi - first * SYNTHETIC_CHUNK].contiguous()
    return out


class PipelineError(Exception):
    r"""A failure of the job, with the one-line message every rank
    prints."""


# ----------------------------------------------------------------- memory

def _clear_peak() -> bool:
    r"""Resets this process's RSS high-water mark (VmHWM) to its current
    RSS, so that each stage's peak is its own (Linux >= 4.0)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _status_bytes(key: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss() -> int:
    r"""This process's resident set size in bytes (the high-water mark
    where the current size cannot be read)."""
    now = _status_bytes('VmRSS')
    return now if now is not None else peak_rss()


def peak_rss() -> int:
    r"""This process's RSS high-water mark in bytes: VmHWM since the last
    reset where Linux keeps it, else :func:`resource.getrusage`'s
    ``ru_maxrss`` (since the process started)."""
    hwm = _status_bytes('VmHWM')
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------- counting

@contextmanager
def count_sent(stats: CommStats, stage: str, world: int):
    r"""Counts the bytes this rank sends to other ranks by the collectives
    called inside the block (for the pattern, whose function returns no
    stats): point-to-point sends as ``<stage>/ring``, all-to-all as
    ``<stage>/exchange``, all-gather as ``<stage>/checks``."""
    saved = (dist.batch_isend_irecv, dist.all_to_all_single,
             dist.all_gather)

    def nbytes(t: Tensor) -> int:
        return t.numel() * t.element_size()

    def batch_isend_irecv(ops):
        record(stats, f'{stage}/ring', sum(
            nbytes(op.tensor) for op in ops if op.op is dist.isend))
        return saved[0](ops)

    def all_to_all_single(output, input, output_split_sizes=None,
                          input_split_sizes=None, *args, **kwargs):
        rank = dist.get_rank(kwargs.get('group'))
        rows = input.size(0)
        split = list(input_split_sizes) if input_split_sizes else \
            [rows // world] * world
        per_row = nbytes(input) // max(rows, 1)
        record(stats, f'{stage}/exchange', per_row * (rows - split[rank]))
        return saved[1](output, input, output_split_sizes,
                        input_split_sizes, *args, **kwargs)

    def all_gather(out, tensor, *args, **kwargs):
        record(stats, f'{stage}/checks', nbytes(tensor) * (world - 1))
        return saved[2](out, tensor, *args, **kwargs)

    dist.batch_isend_irecv = batch_isend_irecv
    dist.all_to_all_single = all_to_all_single
    dist.all_gather = all_gather
    try:
        yield stats
    finally:
        dist.batch_isend_irecv, dist.all_to_all_single, dist.all_gather = \
            saved


# ------------------------------------------------------------------ stages

class Context:
    r"""One rank's view of a job: its rows, the tensors the stages have made
    so far (loaded from their shards on demand) and where they go."""

    def __init__(self, config: PipelineConfig, out: str, rank: int,
                 world: int):
        self.config, self.out, self.rank, self.world = config, out, rank, \
            world
        self.sizes: List[int] = []
        self.tensors: Dict[str, object] = {}
        self.shards: Dict[str, str] = {}
        self.log: Callable[[str], None] = lambda msg: None

    @property
    def num_local(self) -> int:
        return self.sizes[self.rank]

    @property
    def offset(self) -> int:
        return sum(self.sizes[:self.rank])

    def get(self, name: str):
        if name not in self.tensors:
            if name == 'views':
                self.tensors['views'] = load_views(self.config, self.rank,
                                                   self.world)[0]
            else:
                stage = next(s for s, o in OUTPUTS.items() if o == name)
                self.tensors[name] = torch.load(self.shards[stage])[name]
        return self.tensors[name]


def _pattern(ctx: Context) -> Tuple[Tensor, CommStats]:
    cfg, stats = ctx.config, {}
    with count_sent(stats, 'pattern', ctx.world):
        ei = partitioned_pattern(ctx.get('views'), cfg.k, cfg.similarity,
                                 memory_budget=cfg.memory_budget)
    return ei, stats


def _scores(ctx: Context) -> Tuple[Tensor, CommStats]:
    cfg = ctx.config
    return partitioned_relation_scores(
        ctx.get('views'), ctx.get('edge_index'), cfg.similarity,
        cfg.score_map, cfg.gamma, cfg.k)


def _powers(ctx: Context) -> Tuple[Tensor, CommStats]:
    cfg = ctx.config
    xs = list(ctx.get('views').values()) if cfg.mode == 'propagated' \
        else None
    return partitioned_graph_powers(
        ctx.get('edge_index'), ctx.get('edge_attr'), ctx.num_local, cfg.P,
        cfg.mode, cfg.order0, xs=xs, similarity=cfg.similarity,
        score_map=cfg.score_map, gamma=cfg.gamma)


class _FusionOfPowers(PartitionedLEGO):
    r"""A :class:`PartitionedLEGO` whose expansion is the powers stage's
    shard (the expansion has no parameters, so its powers are the same at
    every step): its forward pass fuses them."""

    def __init__(self, powers: Tensor, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.powers = powers  # neither a parameter nor a buffer

    def forward(self, edge_index, edge_attr, num_local, xs=None):
        return self.fusion(self.powers), {}


def _lego(ctx: Context, dtype: torch.dtype, cls=PartitionedLEGO, *args):
    cfg = ctx.config
    # The same seed on every rank: the fusion's parameters are replicated.
    torch.manual_seed(cfg.seed)
    model = cls(*args, cfg.view_names, cfg.P, cfg.mode, cfg.fusion,
                cfg.out_channels, cfg.cp_rank, cfg.order0, cfg.similarity,
                cfg.score_map, cfg.gamma).to(dtype)
    if cfg.state is not None:
        state = torch.load(cfg.state, map_location='cpu')
        # A LEGO's state dict also holds what is not fused here.
        missing = model.load_state_dict(state, strict=False).missing_keys
        if missing:
            raise PipelineError(f"--state {cfg.state} lacks {missing}")
    return model


def _fusion(ctx: Context) -> Tuple[Tensor, CommStats]:
    powers = ctx.get('powers')
    return _lego(ctx, powers.dtype).fusion(powers), {}


def load_labels(config: PipelineConfig, rank: int, world: int,
                num_local: int) -> Tuple[Tensor, Tensor, int]:
    r"""This rank's classes and train mask for the ``train`` stage, and the
    number of classes (one all-reduce of the largest class): the synthetic
    clusters and seeded mask (:func:`synthetic_classes`), or the rank's
    :obj:`labels` file, labelled where its class is not :obj:`-1`."""
    if config.synthetic is not None:
        sizes = even_sizes(config.synthetic, world)
        lo = sum(sizes[:rank])
        y, mask = synthetic_classes(config.synthetic, config.seed, lo,
                                    lo + sizes[rank], config.train_fraction)
        return y, mask, SYNTHETIC_CLUSTERS
    if config.labels is None:
        raise PipelineError("the train stage needs --labels")
    path = config.labels.format(rank=rank)
    try:
        arr = np.load(path)
    except (OSError, ValueError) as e:
        raise PipelineError(f"--labels: cannot load {path}: {e}") from None
    if arr.ndim != 1 or arr.dtype.kind not in 'iu' or \
            arr.shape[0] != num_local:
        raise PipelineError(
            f"--labels: {path} must hold a 1-D integer array of this rank's "
            f"{num_local} rows, got shape {arr.shape} of {arr.dtype}")
    y = torch.from_numpy(arr.astype(np.int64))
    if y.numel() and int(y.min()) < -1:
        raise PipelineError(f"--labels: {path} holds a class below -1 "
                            f"({int(y.min())}); -1 marks unlabelled nodes")
    mask = y >= 0
    top = torch.tensor([int(y.max()) if y.numel() else -1])
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return y.clamp(min=0), mask, max(int(top), 0) + 1


def _train(ctx: Context) -> Tuple[dict, CommStats]:
    cfg = ctx.config
    dtype = getattr(torch, cfg.train_dtype)
    views = ctx.get('views')
    x = torch.cat([views[n] for n in cfg.view_names], 1).to(dtype)
    y, mask, classes = load_labels(cfg, ctx.rank, ctx.world, ctx.num_local)
    edge_index = ctx.get('edge_index')
    # Seeded as the fusion stage: training starts from its fused graph.
    lego = _lego(ctx, dtype, _FusionOfPowers, ctx.get('powers').to(dtype))
    head = PartitionedGCN(x.size(1), cfg.hidden_channels, classes,
                          cfg.layers, cfg.out_channels, cached=True)
    model = PartitionedNodeClassifier(lego, head).to(dtype)
    model.broadcast_parameters()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses, stats = [], {}
    with torch.enable_grad():
        for epoch in range(cfg.epochs):
            loss, sent = partitioned_train_step(model, optimizer, edge_index,
                                                None, x, y, mask)
            for key, nbytes in sent.items():
                record(stats, key if key.startswith('train/')
                       else f'train/{key}', nbytes)
            losses.append(loss)
            ctx.log(f"stage train: epoch {epoch + 1}/{cfg.epochs}: loss "
                    f"{loss:.6f}")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = torch.tensor(losses, dtype=torch.float64)
    return {'state': state, 'losses': losses, 'num_classes': classes,
            'dtype': cfg.train_dtype}, stats


#: The function of each stage (tests replace them to inject faults).
STAGE_FUNCTIONS: Dict[str, Callable[[Context], Tuple[Tensor, CommStats]]] = {
    'pattern': _pattern, 'scores': _scores, 'powers': _powers,
    'fusion': _fusion, 'train': _train}


# ------------------------------------------------------------------- input

def load_views(config: PipelineConfig, rank: int, world: int
               ) -> Tuple[Dict[str, Tensor], List[list]]:
    r"""This rank's rows of every view and what identifies them (for the
    configuration hash): the synthetic parameters, or each file's path,
    size and modification time."""
    if config.synthetic is not None:
        sizes = even_sizes(config.synthetic, world)
        lo = sum(sizes[:rank])
        views = synthetic_rows(config.synthetic, config.synthetic_dims,
                               config.seed, lo, lo + sizes[rank])
        return views, [['synthetic', config.synthetic,
                        list(config.synthetic_dims), config.seed]]
    views, ident = {}, []
    for name, pattern in config.views:
        path = pattern.format(rank=rank)
        try:
            arr = np.load(path, mmap_mode='r')
        except (OSError, ValueError) as e:
            raise PipelineError(f"view {name!r}: cannot load {path}: "
                                f"{e}") from None
        if arr.ndim != 2 or arr.dtype.kind != 'f':
            raise PipelineError(
                f"view {name!r}: {path} must hold a 2-D floating point "
                f"array [n_r, d], got shape {arr.shape} of {arr.dtype}")
        views[name] = torch.from_numpy(np.ascontiguousarray(arr))
        st = os.stat(path)
        ident.append([name, os.path.abspath(path), st.st_size,
                      st.st_mtime_ns])
    return views, ident


def stage_hashes(config: PipelineConfig, ident: List[list],
                 sizes: Sequence[int], rank: int) -> Dict[str, str]:
    r"""The hash of each stage's configuration on this rank: its options,
    the hash of the stage before it, and (from the first) the rank, the row
    split and the data's identity."""
    opts = asdict(config)
    if config.state is not None:
        with open(config.state, 'rb') as f:
            opts['state'] = hashlib.sha256(f.read()).hexdigest()
    if config.labels is not None:  # this rank's file, as the views'
        path = config.labels.format(rank=rank)
        try:
            st = os.stat(path)
            opts['labels'] = [os.path.abspath(path), st.st_size,
                              st.st_mtime_ns]
        except OSError:
            opts['labels'] = [os.path.abspath(path), None]
    prev = json.dumps([rank, list(sizes), ident])
    out = {}
    for stage in STAGES:
        text = json.dumps([prev, stage, [opts[o] for o in
                                         STAGE_OPTIONS[stage]]])
        prev = out[stage] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


# ------------------------------------------------------------------ output

def _atomic(path: str, write: Callable[[str], None]) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    write(tmp)
    os.replace(tmp, path)  # readers see the old file or the whole new one


def write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write('\n')
    _atomic(path, write)


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def rank_dir(out: str, rank: int) -> str:
    return os.path.join(out, f'rank{rank:05d}')


# -------------------------------------------------------------- watchdog

class Guard:
    r"""Ends every rank of the job when one fails, instead of leaving them
    waiting: a daemon thread beats a heartbeat counter of this rank into
    the job's store and polls it for a failure message, which any rank
    that fails writes first (the first one wins); seeing it, or losing the
    store, it prints the message and ends the process with status 1.

    Args:
        rank (int): This rank.
        world (int): The ranks :math:`W`.
        timeout (float): Seconds to wait for the store.
    """

    def __init__(self, rank: int, world: int, timeout: float):
        self.rank, self.world, self.timeout = rank, world, timeout
        self.stage = 'setup'
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.store = None
        if world > 1:
            # A client of its own: the watchdog thread never shares one
            # with the main thread. Keys are per run of a restarted job.
            client = dist.TCPStore(
                os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']),
                is_master=False, wait_for_workers=False,
                timeout=datetime.timedelta(seconds=timeout))
            prefix = 'pyg_lego/{}/{}/'.format(
                os.environ.get('TORCHELASTIC_RUN_ID', ''),
                os.environ.get('TORCHELASTIC_RESTART_COUNT', '0'))
            self.store = dist.PrefixStore(prefix, client)

    def start(self) -> None:
        if self.store is not None:
            self._thread = threading.Thread(target=self._watch, daemon=True,
                                            name='pyg_lego-watchdog')
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            msg = None
            try:
                self.store.add(f'beat/{self.rank}', 1)
                if self.store.check(['failed']):
                    msg = self.store.get('failed').decode()
                    self.store.add('seen', 1)
            except Exception as e:  # the store's host (rank 0) is gone
                if not self._stop.is_set():  # not our own failure's end
                    self._exit(f"lost the job's store at "
                               f"{os.environ.get('MASTER_ADDR')}:"
                               f"{os.environ.get('MASTER_PORT')} during "
                               f"stage {self.stage!r} (rank 0 or torchrun's "
                               f"agent has stopped): {_first_line(e)}")
                return
            if msg is not None and not self._stop.is_set():
                self._exit(f"stopping: {msg}")

    def _exit(self, msg: str) -> None:
        print(f"{PROG}: rank {self.rank}: error: {msg}", file=sys.stderr,
              flush=True)
        os._exit(1)

    def silent(self) -> List[int]:
        r"""The other ranks whose heartbeat has not moved for a few polls:
        dead, killed or frozen."""
        if self.store is None:
            return []
        others = [r for r in range(self.world) if r != self.rank]
        try:
            before = [self.store.add(f'beat/{r}', 0) for r in others]
            time.sleep(8 * POLL_S)
            after = [self.store.add(f'beat/{r}', 0) for r in others]
        except Exception:
            return []
        return [r for r, b, a in zip(others, before, after) if a == b]

    def fail(self, error: BaseException) -> None:
        r"""Reports :obj:`error` as the job's failure (unless another rank
        has reported one first) and ends this process with status 1."""
        msg = self.describe(error)
        self._stop.set()  # this thread reports from here on, not the watchdog
        if self.store is not None:
            try:
                if self.store.add('failures', 1) == 1:
                    self.store.set('failed', msg)
                    # Rank 0 may host the store: it stays until the others
                    # have read the message (or a few polls have passed).
                    for _ in range(int(2 / POLL_S)):
                        if self.store.add('seen', 0) >= self.world - 1:
                            break
                        time.sleep(POLL_S)
                else:  # another rank's failure came first: report it
                    for _ in range(int(2 / POLL_S)):
                        if self.store.check(['failed']):
                            msg = self.store.get('failed').decode()
                            break
                        time.sleep(POLL_S)
            except Exception:
                pass
        self._exit(msg)

    def describe(self, error: BaseException) -> str:
        where = f"in stage {self.stage!r}"
        if isinstance(error, PipelineError):
            return f"rank {self.rank} {where}: {error}"
        if isinstance(error, SystemExit):
            return f"rank {self.rank} exited with status {error.code} {where}"
        if isinstance(error, KeyboardInterrupt):
            return f"rank {self.rank} was interrupted {where}"
        text = _first_line(error)
        if not _is_comm_error(error):
            return (f"rank {self.rank} failed {where}: "
                    f"{type(error).__name__}: {text}")
        # A collective broke: the cause is another rank. Give a rank that
        # raised the time to report it before naming the silent ones.
        if self.store is not None:
            for _ in range(int(1 / POLL_S)):
                try:
                    if self.store.check(['failed']):
                        return self.store.get('failed').decode()
                except Exception:
                    break
                time.sleep(POLL_S)
        silent = self.silent()
        if silent:
            return (f"rank(s) {silent} stopped (died, were killed or froze) "
                    f"{where}; rank {self.rank}'s collective failed: {text}")
        if 'Timed out' in text or 'timed out' in text:
            others = [r for r in range(self.world) if r != self.rank]
            return (f"rank {self.rank} timed out after --timeout "
                    f"{self.timeout:g} s {where} waiting for rank(s) "
                    f"{others} (alive but hung, or slower than the timeout)")
        return f"rank {self.rank}'s collective failed {where}: {text}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_comm_error(error: BaseException) -> bool:
    dist_error = getattr(dist, 'DistError', ())
    return isinstance(error, dist_error) or (
        isinstance(error, RuntimeError) and
        any(w in str(error) for w in ('gloo', 'Connection', 'Timed out',
                                      'NCCL', 'Socket')))


# ---------------------------------------------------------------- the job

def _agree(flags: List[bool]) -> List[bool]:
    r"""Each flag where it is true on every rank (one all-reduce)."""
    t = torch.tensor(flags, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return [bool(v) for v in t.tolist()]


def _keep(ctx: Context, stages: Sequence[str], have: Dict[str, bool],
          inputs: Dict[str, Tuple[str, ...]]) -> None:
    r"""Frees the tensors that no stage still to compute reads: they would
    add to its peak."""
    needed = {n for s in stages if not have[s] for n in inputs[s]}
    for name in list(ctx.tensors):
        if name not in needed:
            del ctx.tensors[name]


def run_pipeline(config: PipelineConfig, out: str, rank: int, world: int,
                 resume: bool = False, until: str = 'fusion',
                 guard: Optional[Guard] = None,
                 log: Callable[[str], None] = lambda msg: None) -> dict:
    r"""Runs the stages of one rank of a job, in an initialised default
    process group of :math:`W` ranks, and writes the rank's shards and
    manifest under :obj:`out` (``python -m pyg_lego.distributed`` is its
    command line). Each stage's peak memory is the process's RSS high-water
    mark (VmHWM, reset before the stage) and its bytes are those this rank
    sent to other ranks.

    Args:
        config (PipelineConfig): What to compute (the same on every rank).
        out (str): The output folder (shared, or each rank's own).
        rank (int): This rank :math:`r`.
        world (int): The ranks :math:`W`.
        resume (bool, optional): Reuse the stages whose shards every rank
            holds with a matching configuration hash. (default:
            :obj:`False`)
        until (str, optional): The last stage to run: :obj:`"pattern"`,
            :obj:`"scores"`, :obj:`"powers"`, :obj:`"fusion"` or
            :obj:`"train"` (the fusion and a GCN head trained jointly, for
            :obj:`epochs` full-graph steps from the fusion's initial
            parameters; its shard holds the state dict, the same on every
            rank, and the loss of every epoch). (default: :obj:`"fusion"`)
        guard (object, optional): The command line's watchdog, told the
            current stage for the message of a failure.
            (default: :obj:`None`)
        log (callable, optional): Takes a progress line. (default: prints
            nothing)

    Returns:
        This rank's record of the run: for every stage, whether it was
        computed or reused and, if computed, its time, peak RSS and bytes
        sent.
    """
    stages = STAGES[:STAGES.index(until) + 1]
    inputs = dict(INPUTS)
    if config.mode == 'propagated':  # it propagates the features
        inputs['powers'] += ('views', )
    base_rss = rss()
    ctx = Context(config, out, rank, world)
    ctx.log = log
    t0 = time.perf_counter()
    views, ident = load_views(config, rank, world)
    ctx.tensors['views'] = views
    n_local = next(iter(views.values())).size(0)
    ctx.sizes = partition_sizes(n_local)
    load_s = time.perf_counter() - t0
    hashes = stage_hashes(config, ident, ctx.sizes, rank)
    folder = rank_dir(out, rank)
    os.makedirs(folder, exist_ok=True)
    mpath = os.path.join(folder, 'manifest.json')
    manifest = (read_json(mpath) if resume else None) or {}
    entries = manifest.get('stages', {})
    for stage in STAGES:
        ctx.shards[stage] = os.path.join(folder, f'{stage}.pt')
    mine = []
    for stage in stages:
        e = entries.get(stage, {})
        path = ctx.shards[stage]
        mine.append(resume and e.get('hash') == hashes[stage] and
                    os.path.isfile(path) and
                    os.path.getsize(path) == e.get('file_bytes'))
    have = dict(zip(stages, _agree(mine)))
    # Drop what this run will not keep: stale entries would be reused by a
    # later resume against shards that no longer match them.
    entries = {s: e for s, e in entries.items() if s in have and have[s]}
    manifest = {'rank': rank, 'world': world, 'sizes': ctx.sizes,
                'offset': ctx.offset, 'hashes': hashes, 'stages': entries,
                'runs': manifest.get('runs', [])}
    clear_ok = _clear_peak()
    this_run = {'computed': [], 'reused': [], 'load_s': load_s,
                'base_rss': base_rss,
                'peak_method': 'VmHWM, reset per stage' if clear_ok
                else 'ru_maxrss, since the process started',
                'finished': False}
    # Recorded before the stages: a run that is killed counts as one.
    manifest['runs'].append(this_run)
    run_index = len(manifest['runs']) - 1
    write_json(mpath, manifest)
    for i, stage in enumerate(stages):
        if guard is not None:
            guard.stage = stage
        if have[stage]:
            this_run['reused'].append(stage)
            log(f"stage {stage}: reused ({ctx.shards[stage]})")
            continue
        log(f"stage {stage}: running")
        _keep(ctx, stages[i:], have, inputs)
        for name in inputs[stage]:
            ctx.get(name)
        _clear_peak()
        start_rss = rss()
        t0 = time.perf_counter()
        with torch.no_grad():
            value, stats = STAGE_FUNCTIONS[stage](ctx)
        elapsed = time.perf_counter() - t0
        peak = peak_rss()
        name = OUTPUTS[stage]
        # The training returns its state dict and more; the others a tensor.
        payload = dict(value) if isinstance(value, dict) else {name: value}
        shape = list(payload['losses'].shape) if 'losses' in payload \
            else list(value.shape)
        ctx.tensors[name] = payload[name]
        _atomic(ctx.shards[stage], lambda tmp: torch.save(
            {**payload, 'offset': ctx.offset, 'num_local': ctx.num_local,
             'hash': hashes[stage]}, tmp))
        _keep(ctx, stages[i + 1:], have, inputs)
        entry = {'hash': hashes[stage], 'file': os.path.basename(
            ctx.shards[stage]), 'file_bytes': os.path.getsize(
            ctx.shards[stage]), 'shape': shape,
            'time_s': elapsed, 'rss_start': start_rss, 'peak_rss': peak,
            'sent': stats, 'run': run_index}
        if 'losses' in payload:
            entry['losses'] = payload['losses'].tolist()
        entries[stage] = entry
        this_run['computed'].append(stage)
        manifest['stages'] = entries
        write_json(mpath, manifest)
        log(f"stage {stage}: {elapsed:.2f} s, peak RSS "
            f"{peak / 2**20:.0f} MiB, sent "
            f"{sum(stats.values()) / 2**20:.2f} MiB, shape "
            f"{tuple(shape)}")
    this_run['finished'] = True
    write_json(mpath, manifest)
    return {'rank': rank, 'sizes': ctx.sizes, 'hashes': hashes,
            'stages': {s: entries[s] for s in stages}, 'run': this_run}


# ------------------------------------------------------------ command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage and error
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _view_spec(text: str) -> Tuple[str, str]:
    name, sep, pattern = text.partition('=')
    if not sep or not name or '{rank}' not in pattern:
        raise argparse.ArgumentTypeError(
            f"--view takes NAME=PATTERN with {{rank}} in the pattern, e.g. "
            f"rgb=feats/rgb.{{rank}}.npy; got {text!r}")
    return name, pattern


def _labels_spec(text: str) -> str:
    if '{rank}' not in text:
        raise argparse.ArgumentTypeError(
            f"--labels takes a pattern with {{rank}} in it, e.g. "
            f"labels.{{rank}}.npy; got {text!r}")
    return text


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"must be a fraction in (0, 1], got {text!r}")
    return value


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(
                f"must be a positive {kind.__name__}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=(
        "Build, expand and fuse a LEGO relation graph partitioned over the "
        "ranks of a torch.distributed job (run under torchrun; without it, "
        "one process), and with --until train train the fusion and a GCN "
        "head on it. Each rank writes its shards to OUT/rankRRRRR/."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--view', action='append', type=_view_spec,
                     dest='views', metavar='NAME=PATTERN',
                     help="a view and its per-rank .npy rows, {rank} in "
                          "the pattern (repeat for each view)")
    src.add_argument('--synthetic', type=_positive(int), metavar='N',
                     help="generate N synthetic nodes (split evenly)")
    p.add_argument('--synthetic-dims', type=_positive(int), nargs='+',
                   default=[32, 24, 16], metavar='D',
                   help="widths of the synthetic views (default: 32 24 16)")
    p.add_argument('--out', required=True, help="output folder")
    p.add_argument('--resume', action='store_true',
                   help="reuse the stages whose shards match the config")
    p.add_argument('--until', choices=STAGES, default='fusion',
                   help="last stage to run (default: fusion; train needs "
                        "--labels or --synthetic)")
    p.add_argument('--timeout', type=_positive(float), default=600.0,
                   metavar='SECONDS', help="how long a rank waits for the "
                   "others in a collective before the job fails "
                   "(default: 600)")
    p.add_argument('--k', type=_positive(int), default=10)
    p.add_argument('--similarity', choices=SIMILARITIES, default='cosine')
    p.add_argument('--score-map', choices=SCORE_MAPS, default='auto')
    p.add_argument('--gamma', type=_positive(float), default=None)
    p.add_argument('--P', type=int, default=2, dest='P')
    p.add_argument('--mode', choices=MODES, default='masked')
    p.add_argument('--order0', choices=('self', 'identity'), default='self')
    p.add_argument('--fusion', choices=('linear', 'polynomial', 'geometric'),
                   default='linear')
    p.add_argument('--out-channels', type=_positive(int), default=1)
    p.add_argument('--cp-rank', type=_positive(int), default=None)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--state', help="state dict of a LEGO for the fusion")
    p.add_argument('--memory-budget', type=_positive(int), default=None,
                   metavar='BYTES', help="bytes of one block of kNN scores")
    t = p.add_argument_group('train stage (--until train)')
    t.add_argument('--labels', type=_labels_spec, metavar='PATTERN',
                   help="each rank's classes, {rank} in the pattern: a 1-D "
                        "integer .npy array per rank, -1 = unlabelled "
                        "(with --view; synthetic rows carry their clusters)")
    t.add_argument('--epochs', type=_positive(int), default=100,
                   help="full-graph Adam steps (default: 100)")
    t.add_argument('--lr', type=_positive(float), default=0.01,
                   help="Adam's learning rate (default: 0.01)")
    t.add_argument('--hidden-channels', type=_positive(int), default=64,
                   help="hidden width of the GCN head (default: 64)")
    t.add_argument('--layers', type=_positive(int), default=2,
                   help="GCN layers (default: 2)")
    t.add_argument('--train-fraction', type=_fraction, default=0.5,
                   help="with --synthetic: the fraction of nodes in the "
                        "seeded train mask (default: 0.5)")
    t.add_argument('--train-dtype', choices=('float32', 'float64'),
                   default='float32', help="dtype of the training "
                   "(default: float32)")
    p.add_argument('--quiet', action='store_true',
                   help="no progress lines")
    return p


def _config(args, parser) -> PipelineConfig:
    if args.P < 0:
        parser.error(f"--P must be >= 0, got {args.P}")
    if args.state is not None and not os.path.isfile(args.state):
        parser.error(f"--state {args.state}: no such file")
    if args.synthetic is not None and args.synthetic <= args.k:
        parser.error(f"--k must be below the number of nodes: --k {args.k} "
                     f"with --synthetic {args.synthetic}")
    if args.views and len({n for n, _ in args.views}) < len(args.views):
        parser.error("every --view needs its own name")
    if args.labels is not None and args.synthetic is not None:
        parser.error("--labels is for --view jobs: --synthetic rows carry "
                     "their clusters as classes")
    if args.until == 'train' and args.views and args.labels is None:
        parser.error("--until train with --view needs --labels")
    return PipelineConfig(
        views=list(args.views or []), synthetic=args.synthetic,
        synthetic_dims=list(args.synthetic_dims), k=args.k,
        similarity=args.similarity, score_map=args.score_map,
        gamma=args.gamma, P=args.P, mode=args.mode, order0=args.order0,
        fusion=args.fusion, out_channels=args.out_channels,
        cp_rank=args.cp_rank, seed=args.seed, state=args.state,
        memory_budget=args.memory_budget, epochs=args.epochs, lr=args.lr,
        hidden_channels=args.hidden_channels, layers=args.layers,
        labels=args.labels, train_fraction=args.train_fraction,
        train_dtype=args.train_dtype)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""The command line of the job (``python -m pyg_lego.distributed``);
    returns the exit status (0; a failure ends the process with status 1,
    a bad option with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = _config(args, parser)
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ:
        rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    else:  # not launched by torchrun: a job of one process
        rank, world = 0, 1
        os.environ.update(MASTER_ADDR='127.0.0.1',
                          MASTER_PORT=str(_free_port()), RANK='0',
                          WORLD_SIZE='1')
    if config.synthetic is not None and config.synthetic < world:
        parser.error(f"--synthetic {config.synthetic} has fewer nodes than "
                     f"the {world} ranks")
    timeout = datetime.timedelta(seconds=args.timeout)
    try:
        dist.init_process_group('gloo', timeout=timeout, rank=rank,
                                world_size=world)
    except Exception as e:
        print(f"{PROG}: rank {rank}: error: the {world} ranks did not meet "
              f"at {os.environ.get('MASTER_ADDR')}:"
              f"{os.environ.get('MASTER_PORT')} within --timeout "
              f"{args.timeout:g} s: {_first_line(e)}", file=sys.stderr)
        return 1
    guard = Guard(rank, world, args.timeout)
    guard.start()

    def log(msg: str) -> None:
        if rank == 0 and not args.quiet:
            print(f"[rank 0/{world}] {msg}", file=sys.stderr, flush=True)
    try:
        record_ = run_pipeline(config, args.out, rank, world, args.resume,
                               args.until, guard, log)
        guard.stage = 'manifest'
        records = [None] * world
        dist.all_gather_object(records, record_)
        if rank == 0:
            write_json(os.path.join(args.out, 'manifest.json'), {
                'config': asdict(config), 'world': world,
                'sizes': record_['sizes'], 'timeout_s': args.timeout,
                'ranks': records})
        # Every watchdog stops before any rank leaves: rank 0 may host the
        # store they poll.
        guard.stop()
        dist.barrier()
    except BaseException as e:  # noqa: B902 - every failure ends the job
        guard.fail(e)
    dist.destroy_process_group()
    log(f"done: {args.out}")
    return 0
