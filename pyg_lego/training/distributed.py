r"""Multi-process data-parallel training with
:class:`~torch.nn.parallel.DistributedDataParallel`, started by
:obj:`torchrun`.

Every process holds the whole fused graph (or every video) and trains on its
share of each global batch of seed nodes (videos), drawn by
:func:`~pyg_lego.training.epoch_seeds`; DDP averages the gradients, so
:math:`W` processes with :obj:`batch_size // W` seeds each take the steps
that one process takes with :obj:`batch_size`, whenever the loss is a mean
over seeds (cross entropy; the video model's top-:math:`k` MIL loss). The
ranking loss compares videos within a batch, so with it each process
optimises its own share; the degree-variance term is not supported here.
The backend is :obj:`gloo` on CPU and :obj:`nccl` on GPU (one GPU per
process, :obj:`LOCAL_RANK`).

Run::

    # one process (gnn: large-graph GNN; vad: the video-anomaly model)
    python -m pyg_lego.training.distributed gnn --nodes 3000 --out runs/gnn
    # two CPU processes (gloo)
    torchrun --nproc_per_node=2 -m pyg_lego.training.distributed gnn \
        --nodes 3000 --out runs/gnn
    # 4 GPUs on each of 2 machines (nccl), the same line on both machines
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST:29500 -m pyg_lego.training.distributed gnn ...
"""
import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch_geometric.data import Data

from pyg_lego.training.neighbor import (epoch_seeds, full_graph_inference,
                                        neighbor_inference, neighbor_loader,
                                        train_epoch)


def setup(backend: Optional[str] = None) -> Tuple[int, int, torch.device]:
    r"""Joins the process group that :obj:`torchrun` describes in the
    environment (:obj:`RANK`, :obj:`WORLD_SIZE`, :obj:`MASTER_ADDR`, ...).

    Without those variables (a plain :obj:`python` run) no group is made
    and the process is rank 0 of 1.

    Args:
        backend (str, optional): :obj:`"gloo"` or :obj:`"nccl"`;
            :obj:`nccl` if CUDA is available, else :obj:`gloo`.

    Returns:
        :obj:`(rank, world_size, device)`.
    """
    backend = backend or ('nccl' if torch.cuda.is_available() else 'gloo')
    if backend not in ('gloo', 'nccl'):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == 'nccl' and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA devices; use 'gloo' on "
                         "CPU")
    launched = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
    if backend == 'nccl':
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device('cpu')
    if not launched:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def cleanup(barrier: bool = True) -> None:
    r"""Leaves the process group, if any. With :obj:`barrier`, only once
    every process got here: a process that leaves while rank 0 (which hosts
    the rendezvous store) is still busy can wait forever. After an error,
    leave without it."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
            # torch's gloo worker thread frees the barrier's work after the
            # wait has returned, and that takes the GIL; a process group
            # destroyed first (its destructor joins that thread with the GIL
            # held) deadlocks. One rank hung so at exit in 3 of 10 runs
            # (py-spy: ~ProcessGroupGloo joining, ~AsyncBarrierWork
            # waiting for the GIL). A pause without the GIL lets it finish.
            time.sleep(0.2)
        dist.destroy_process_group()


class SyncBatchNorm1d(torch.nn.BatchNorm1d):
    r"""A :class:`~torch.nn.BatchNorm1d` whose training statistics span the
    batches of all processes, on any backend (PyTorch's
    :class:`~torch.nn.SyncBatchNorm` needs GPUs): with it, :math:`W`
    processes normalise like one process with the global batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        count = torch.tensor(float(x.size(0)), dtype=x.dtype,
                             device=x.device)
        dist.all_reduce(count)
        mean = _all_reduce(x.sum(dim=0)) / count
        var = _all_reduce(((x - mean)**2).sum(dim=0)) / count
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(unbiased, m)
                self.num_batches_tracked += 1
        out = (x - mean) * torch.rsqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    r"""Differentiable sum over processes (its backward sums the gradients
    likewise)."""
    import warnings

    from torch.distributed.nn.functional import all_reduce
    with warnings.catch_warnings():
        # Deprecated in favour of the functional collectives, which have no
        # autograd support on gloo.
        warnings.simplefilter('ignore', FutureWarning)
        return all_reduce(x)


def sync_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    r"""Replaces every :class:`~torch.nn.BatchNorm1d` of :obj:`module` by a
    :class:`SyncBatchNorm1d` with the same state."""
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm1d:
            sync = SyncBatchNorm1d(child.num_features, child.eps,
                                   child.momentum, child.affine,
                                   child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.to(next(child.buffers()).device)
                    if list(child.buffers()) else sync)
        else:
            sync_batch_norm(child)
    return module


def wrap(model: torch.nn.Module,
         device: torch.device) -> torch.nn.Module:
    r"""The model on :obj:`device`, wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel` when a process group
    exists (DDP broadcasts rank 0's parameters to all processes). Batch
    norms are synchronised across processes (in place, so :obj:`model`
    keeps the state dict keys of the original)."""
    model = model.to(device)
    if not (dist.is_available() and dist.is_initialized()):
        return model
    from torch.nn.parallel import DistributedDataParallel
    sync_batch_norm(model)
    ids = [device.index] if device.type == 'cuda' else None
    return DistributedDataParallel(model, device_ids=ids)


def train_gnn(model: torch.nn.Module, data: Data, train_nodes: torch.Tensor,
              epochs: int, batch_size: int, num_neighbors: Sequence[int],
              lr: float = 0.01, seed: int = 0, rank: int = 0,
              world_size: int = 1, device: Optional[torch.device] = None,
              progress: bool = False) -> List[float]:
    r"""Trains :obj:`model` (plain or DDP-wrapped) over neighbour
    mini-batches of :obj:`data`: each process takes its
    :obj:`batch_size // world_size` share of every global batch.

    Returns:
        This process's mean loss per epoch.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        seeds = epoch_seeds(train_nodes, batch_size, epoch, seed, rank,
                            world_size)
        loader = neighbor_loader(data, list(num_neighbors), input_nodes=seeds,
                                 batch_size=batch_size // world_size,
                                 shuffle=False)
        losses.append(train_epoch(model, loader, optimizer, device=device,
                                  progress=progress and rank == 0))
    return losses


def train_vad(model: torch.nn.Module, train_set, config, rank: int = 0,
              world_size: int = 1, device: Optional[torch.device] = None,
              progress: bool = False) -> List[float]:
    r"""Trains a video-anomaly model (plain or DDP-wrapped) with the loss
    of :class:`~pyg_lego.vad.train.TrainConfig`: each process takes its
    :obj:`config.batch_size // world_size` share of every global batch of
    videos. Returns this process's mean loss per epoch."""
    from torch.utils.data import Subset
    from torch_geometric.loader import DataLoader

    from pyg_lego.vad.train import _loss
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    if config.degree_weight and model is not getattr(model, 'module', model):
        # The regulariser reads the fused graph through LEGOVAD's own
        # method, which would bypass DDP's gradient hooks.
        raise ValueError("the degree-variance regulariser is not supported "
                         "in data-parallel training; set degree_weight=0")
    history = []
    epochs = range(config.epochs)
    if progress and rank == 0:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc='train vad', unit='epoch')
    for epoch in epochs:
        ids = epoch_seeds(torch.arange(len(train_set)), config.batch_size,
                          epoch, config.seed, rank, world_size)
        loader = DataLoader(Subset(train_set, ids.tolist()),
                            batch_size=config.batch_size // world_size)
        model.train()
        total, count = 0.0, 0
        for batch in loader:
            batch = batch.to(device) if device is not None else batch
            optimizer.zero_grad()
            loss = _loss(model, batch, config)  # calls the DDP wrapper
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.num_graphs
            count += batch.num_graphs
        history.append(total / count)
    return history


def synthetic_gnn_data(num_nodes: int, k: int, P: int, mode: str,
                       seed: int) -> Data:
    r"""The example's fused graph: :func:`~pyg_lego.training.planted_views`
    fused by a seeded (untrained) LEGO model; every process builds the same
    graph."""
    from pyg_lego import LEGO, build_relation_graph
    from pyg_lego.training.neighbor import fused_graph, planted_views
    views, y = planted_views(num_nodes, seed=seed)
    graph = build_relation_graph(views, k=k)
    torch.manual_seed(seed)
    lego = LEGO(graph.view_names, P=P, mode=mode)
    return fused_graph(graph, lego, y=y)


def save_atomic(obj, path: str) -> None:
    r""":func:`torch.save` to a temporary file, then rename: a reader never
    sees a half-written file, even if the process is killed."""
    tmp = f'{path}.tmp{os.getpid()}'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m pyg_lego.training.distributed',
        description='Data-parallel training over a fused graph; start it '
                    'with torchrun for several processes.')
    sub = parser.add_subparsers(dest='task', required=True)
    gnn = sub.add_parser('gnn', help='GNN over a large fused graph with '
                                     'neighbour mini-batches')
    gnn.add_argument('--graph', help='a torch.save()d Data (x, edge_index, '
                     'edge_attr, y) instead of the synthetic graph')
    gnn.add_argument('--nodes', type=int, default=3000)
    gnn.add_argument('--k', type=int, default=8)
    gnn.add_argument('--P', type=int, default=2)
    gnn.add_argument('--mode', default='masked')
    gnn.add_argument('--train-fraction', type=float, default=0.6)
    gnn.add_argument('--hidden', type=int, default=32)
    gnn.add_argument('--layers', type=int, default=2)
    gnn.add_argument('--neighbors', type=int, nargs='+', default=None,
                     help='neighbours per hop (-1: all); default 10 per hop')
    gnn.add_argument('--epochs', type=int, default=5)
    gnn.add_argument('--batch-size', type=int, default=256,
                     help='global batch (split between processes)')
    gnn.add_argument('--lr', type=float, default=0.01)
    gnn.add_argument('--seed', type=int, default=0)
    gnn.add_argument('--double', action='store_true',
                     help='train in float64')
    gnn.add_argument('--backend', choices=['gloo', 'nccl'], default=None)
    gnn.add_argument('--out', required=True, help='output folder')
    gnn.add_argument('--progress', action='store_true')
    vad = sub.add_parser('vad', help="the video-anomaly model (LEGO + "
                         "graph-space head) on the synthetic benchmark")
    vad.add_argument('--num-train', type=int, default=200)
    vad.add_argument('--num-test', type=int, default=100)
    vad.add_argument('--data-seed', type=int, default=0)
    vad.add_argument('--T', type=int, default=32)
    vad.add_argument('--k', type=int, default=8)
    vad.add_argument('--P', type=int, default=2)
    vad.add_argument('--mode', default='masked')
    vad.add_argument('--fusion', default='polynomial')
    vad.add_argument('--loss', choices=['topk', 'ranking'], default='topk')
    vad.add_argument('--epochs', type=int, default=10)
    vad.add_argument('--batch-size', type=int, default=32,
                     help='global batch of videos (split between processes)')
    vad.add_argument('--lr', type=float, default=1e-3)
    vad.add_argument('--seed', type=int, default=0)
    vad.add_argument('--backend', choices=['gloo', 'nccl'], default=None)
    vad.add_argument('--out', required=True, help='output folder')
    vad.add_argument('--progress', action='store_true')
    return parser.parse_args(argv)


def run_gnn(args: argparse.Namespace) -> dict:
    from torch_geometric.nn import GraphConv

    from pyg_lego.nn import PropagationHead
    rank, world_size, device = setup(args.backend)
    try:
        if args.graph:
            data = torch.load(args.graph, weights_only=False)
        else:
            data = synthetic_gnn_data(args.nodes, args.k, args.P, args.mode,
                                      args.seed)
        if args.double:
            data.x, data.edge_attr = data.x.double(), data.edge_attr.double()
        num_train = int(args.train_fraction * data.num_nodes)
        gen = torch.Generator().manual_seed(args.seed)
        order = torch.randperm(data.num_nodes, generator=gen)
        train_nodes, test_nodes = order[:num_train], order[num_train:]
        num_classes = int(data.y.max()) + 1
        channels = data.edge_attr.size(1) if data.edge_attr.dim() == 2 else 1
        torch.manual_seed(args.seed)
        model = PropagationHead(data.num_features, args.hidden, num_classes,
                                num_layers=args.layers, channels=channels,
                                conv=GraphConv)
        if args.double:
            model = model.double()
        ddp = wrap(model, device)
        neighbors = args.neighbors or [10] * args.layers
        losses = train_gnn(ddp, data, train_nodes, args.epochs,
                           args.batch_size, neighbors, args.lr, args.seed,
                           rank, world_size, device, args.progress)
        result = dict(world_size=world_size, losses=losses)
        if rank == 0:
            model = model.cpu()
            full = full_graph_inference(model, data)
            mini = neighbor_inference(model, data, args.layers,
                                      nodes=test_nodes)
            result['test_accuracy'] = float(
                (full[test_nodes].argmax(-1) == data.y[test_nodes]).double()
                .mean())
            result['minibatch_vs_full_max_abs_diff'] = float(
                (mini - full[test_nodes]).abs().max())
            write_result(args.out, 'gnn', model.state_dict(), result)
    except BaseException:
        cleanup(barrier=False)
        raise
    cleanup()
    return result


def write_result(out: str, stem: str, checkpoint: dict,
                 result: dict) -> None:
    r"""Saves :obj:`<stem>.pt` and :obj:`<stem>.json` in :obj:`out` (rank 0)
    and prints the result as one JSON line."""
    os.makedirs(out, exist_ok=True)
    save_atomic(checkpoint, os.path.join(out, f'{stem}.pt'))
    with open(os.path.join(out, f'{stem}.json'), 'w') as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


def run_vad(args: argparse.Namespace) -> dict:
    from dataclasses import asdict

    from pyg_lego.vad.synthetic import make_synthetic
    from pyg_lego.vad.train import (TrainConfig, evaluate, make_model,
                                    seed_everything)
    from pyg_lego.vad.video import VideoGraphDataset
    rank, world_size, device = setup(args.backend)
    try:
        train_videos, test_videos = make_synthetic(
            args.num_train, args.num_test, seed=args.data_seed)
        views = list(train_videos[0].views)
        dims = {v: int(train_videos[0].views[v].shape[1]) for v in views}
        config = TrainConfig(model='lego', views=views, dims=dims, T=args.T,
                             P=args.P, mode=args.mode, fusion=args.fusion,
                             loss=args.loss, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, device=str(device))
        train_set = VideoGraphDataset(train_videos, T=args.T, k=args.k,
                                      view_names=views)
        seed_everything(config.seed)
        model = make_model(config)
        ddp = wrap(model, device)
        losses = train_vad(ddp, train_set, config, rank, world_size, device,
                           args.progress)
        result = dict(world_size=world_size, losses=losses)
        if rank == 0:
            test_set = VideoGraphDataset(test_videos, T=args.T, k=args.k,
                                         view_names=views)
            model = model.cpu()
            metrics = evaluate(model, test_set)
            result.update(auc=metrics['auc'], ap=metrics['ap'])
            # The layout of pyg_lego.vad.train checkpoints, so that
            # `pyg-lego vad eval --checkpoint` reads it.
            write_result(args.out, 'vad', {
                'model': model.state_dict(),
                'config': dict(asdict(config), device='cpu'),
                'epoch': config.epochs, 'history': losses
            }, result)
    except BaseException:
        cleanup(barrier=False)
        raise
    cleanup()
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    {'gnn': run_gnn, 'vad': run_vad}[args.task](args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
