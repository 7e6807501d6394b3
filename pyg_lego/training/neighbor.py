r"""A GNN over a large fused graph, trained with PyG's
:class:`~torch_geometric.loader.NeighborLoader`.

The fused graph is built once for the whole node set (:func:`fused_graph`);
its weights travel as :obj:`edge_attr` (:math:`(|\mathcal{E}|, C)`), so every
sampled subgraph carries the fused weights of its own edges. They are
symmetrically normalised on the *whole* graph before sampling,

.. math::
    \hat{\mathbf{G}}_c = \mathbf{D}_c^{-1/2} \mathbf{G}_c \mathbf{D}_c^{-1/2},

so that a layer that only sums weighted messages (e.g.
:class:`~torch_geometric.nn.conv.GraphConv`) gives each seed node exactly its
full-graph output when the loader takes full neighbourhoods
(:obj:`num_neighbors=[-1] * num_layers`). A layer that normalises inside the
subgraph (:class:`~torch_geometric.nn.conv.GCNConv` with
:obj:`normalize=True`) would see truncated degrees at the last hop.

PyG's :class:`~torch_geometric.sampler.NeighborSampler` needs
:obj:`pyg-lib` or :obj:`torch-sparse`; without them
:func:`neighbor_loader` plugs :class:`TorchNeighborSampler` (the same
directional sampling in plain PyTorch) into the same
:class:`~torch_geometric.loader.NeighborLoader`.
"""
import math
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.sampler import NeighborSampler, SamplerOutput
from torch_geometric.sampler.base import SubgraphType

from pyg_lego.nn.lego import LEGO
from pyg_lego.nn.norm import relation_norm
from pyg_lego.nn.sparsify import drop_zero_edges


def native_sampling() -> bool:
    r"""Whether PyG's own neighbour sampler can run (:obj:`pyg-lib` or
    :obj:`torch-sparse` installed)."""
    import torch_geometric.typing as pyg_typing
    return pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE


class TorchNeighborSampler(NeighborSampler):
    r"""PyG's :class:`~torch_geometric.sampler.NeighborSampler` with a
    plain-PyTorch sampling routine, for installations without :obj:`pyg-lib`
    and :obj:`torch-sparse`.

    Homogeneous, directional sampling without replacement, as PyG's default:
    hop :math:`h` draws up to :obj:`num_neighbors[h]` incoming edges (all for
    :obj:`-1`) of every node first reached at hop :math:`h - 1`, uniformly
    (from :func:`torch.rand`, so :func:`torch.manual_seed` reproduces it), and
    numbers new nodes in order of first appearance. When :obj:`pyg-lib` or
    :obj:`torch-sparse` is present, PyG's routine runs instead.

    Args:
        data (torch_geometric.data.Data): The graph.
        num_neighbors (list of int): Neighbours per hop, :obj:`-1` for all.
        **kwargs (optional): Further arguments of
            :class:`~torch_geometric.sampler.NeighborSampler`; heterogeneous,
            temporal, weighted, disjoint, induced and with-replacement
            sampling need PyG's routine.
    """

    def __init__(self, data: Data, num_neighbors: List[int], **kwargs):
        with warnings.catch_warnings():
            # PyG warns that sampling without pyg-lib is deprecated: this
            # class is what runs instead.
            warnings.filterwarnings('ignore', message='.*pyg-lib.*')
            super().__init__(data, num_neighbors, **kwargs)
        if not native_sampling():
            unsupported = {
                'a heterogeneous graph': self.is_hetero,
                'temporal sampling': self.node_time is not None or
                self.edge_time is not None,
                'weighted sampling': self.edge_weight is not None,
                'disjoint sampling': self.disjoint,
                'replace=True': self.replace,
                "subgraph_type='induced'":
                self.subgraph_type == SubgraphType.induced,
            }
            wanted = [name for name, on in unsupported.items() if on]
            if wanted:
                raise ValueError(f"{', '.join(wanted)} needs pyg-lib or "
                                 f"torch-sparse; the built-in sampler does "
                                 f"homogeneous uniform sampling only")

    def _sample(self, seed: Tensor, seed_time: Optional[Tensor] = None,
                **kwargs) -> SamplerOutput:
        if native_sampling():
            return super()._sample(seed, seed_time, **kwargs)
        seed = seed.to(torch.long)
        local = torch.full((self.num_nodes, ), -1, dtype=torch.long)
        local[seed] = torch.arange(seed.numel())
        nodes, frontier, count = [seed], seed, seed.numel()
        rows, cols, edges = [], [], []
        num_nodes, num_edges = [seed.numel()], []
        for k in self.num_neighbors.get_mapped_values():
            pos, group = self._incoming(frontier, k)
            src = self.row[pos]
            new = _first_appearance(src[local[src] < 0])
            local[new] = torch.arange(count, count + new.numel())
            count += new.numel()
            rows.append(local[src])
            cols.append(local[frontier][group])
            edges.append(pos)
            nodes.append(new)
            num_nodes.append(new.numel())
            num_edges.append(pos.numel())
            frontier = new
        row, col = torch.cat(rows), torch.cat(cols)
        if self.sample_direction == 'backward':
            row, col = col, row
        return SamplerOutput(node=torch.cat(nodes), row=row, col=col,
                             edge=torch.cat(edges), batch=None,
                             num_sampled_nodes=num_nodes,
                             num_sampled_edges=num_edges)

    def _incoming(self, frontier: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        r"""CSC positions of the sampled incoming edges of :obj:`frontier`,
        and the frontier entry each belongs to."""
        start = self.colptr[frontier]
        deg = self.colptr[frontier + 1] - start
        group = torch.arange(frontier.numel()).repeat_interleave(deg)
        first = torch.cumsum(deg, 0) - deg
        offset = torch.arange(group.numel()) - first[group]
        pos = start[group] + offset
        if k < 0:
            return pos, group
        # Random order inside each group, then keep the first k of each.
        order = torch.argsort(group.double() + torch.rand(group.numel(),
                                                           dtype=torch.double))
        keep = offset < k  # offsets of the sorted order are the same ranks
        return pos[order][keep], group[order][keep]


def _first_appearance(index: Tensor) -> Tensor:
    r"""Unique values of :obj:`index` in order of first appearance."""
    uniq, inverse = torch.unique(index, return_inverse=True)
    first = torch.full((uniq.numel(), ), index.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(index.numel()),
                                 reduce='amin')
    return uniq[first.argsort()]


def neighbor_loader(data: Data, num_neighbors: List[int],
                    **kwargs) -> NeighborLoader:
    r"""A :class:`~torch_geometric.loader.NeighborLoader` that also runs
    without :obj:`pyg-lib` and :obj:`torch-sparse` (through
    :class:`TorchNeighborSampler`).

    Args:
        data (torch_geometric.data.Data): The graph, e.g. from
            :func:`fused_graph`.
        num_neighbors (list of int): Neighbours per hop, :obj:`-1` for all.
        **kwargs (optional): Arguments of
            :class:`~torch_geometric.loader.NeighborLoader`
            (:obj:`input_nodes`, :obj:`batch_size`, :obj:`shuffle`, ...).
    """
    if native_sampling() or 'neighbor_sampler' in kwargs:
        return NeighborLoader(data, num_neighbors, **kwargs)
    sampler_args = ('replace', 'subgraph_type', 'disjoint', 'time_attr',
                    'weight_attr', 'is_sorted')
    sampler = TorchNeighborSampler(
        data, num_neighbors,
        **{key: kwargs[key] for key in sampler_args if key in kwargs})
    return NeighborLoader(data, num_neighbors, neighbor_sampler=sampler,
                          **kwargs)


@torch.no_grad()
def fused_graph(data: Data, model: LEGO, x: Optional[Tensor] = None,
                normalize: bool = True, **attrs: Tensor) -> Data:
    r"""The fused graph of a relation graph as a plain
    :class:`~torch_geometric.data.Data` ready for neighbour sampling.

    Args:
        data (RelationData): A graph from
            :func:`~pyg_lego.build_relation_graph`.
        model (LEGO): The fusion model (its coefficients are used as they
            are; the result is detached).
        x (torch.Tensor, optional): Node features of the GNN; the views'
            features side by side if :obj:`None`.
        normalize (bool, optional): Normalise every channel symmetrically on
            the whole graph. (default: :obj:`True`)
        **attrs (torch.Tensor): Further node attributes (e.g. :obj:`y`,
            :obj:`train_mask`).

    Returns:
        :class:`~torch_geometric.data.Data` with :obj:`x`,
        :obj:`edge_index`, :obj:`edge_attr` (fused weights
        :math:`(|\mathcal{E}|, C)`) and :obj:`attrs`. The edges of zero
        weight in every channel (those the model's top-k drops) are left
        out, so that neighbour sampling draws only edges that carry weight.
    """
    fused = model.fuse(data)
    if normalize:
        fused = relation_norm(data.edge_index, fused, data.num_nodes)
    edge_index, fused = drop_zero_edges(data.edge_index, fused)
    if x is None:
        x = torch.cat([data[f'x_{name}'] for name in data.view_names
                       if f'x_{name}' in data], dim=-1)
    if x.size(0) != data.num_nodes:
        raise ValueError(f"x has {x.size(0)} rows but the graph has "
                         f"{data.num_nodes} nodes")
    return Data(x=x, edge_index=edge_index, edge_attr=fused,
                num_nodes=data.num_nodes, **attrs)


def epoch_seeds(nodes: Tensor, batch_size: int, epoch: int, seed: int = 0,
                rank: int = 0, world_size: int = 1) -> Tensor:
    r"""This process's seed nodes of one epoch, in loader order.

    Every process draws the same permutation of :obj:`nodes` (from
    :obj:`seed` and :obj:`epoch`), cuts it into global batches of
    :obj:`batch_size` (a last incomplete batch is dropped) and takes its own
    contiguous :obj:`batch_size // world_size` share of each. A loader with
    :obj:`batch_size // world_size` over the result therefore sees, at step
    :math:`t`, its part of global batch :math:`t`: data-parallel training
    then follows single-process training with the global batch.
    """
    if batch_size % world_size != 0:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the "
                         f"number of processes ({world_size})")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = nodes[torch.randperm(nodes.numel(), generator=gen)]
    steps = nodes.numel() // batch_size
    if steps == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the "
                         f"{nodes.numel()} training nodes")
    share = batch_size // world_size
    batches = order[:steps * batch_size].view(steps, world_size, share)
    return batches[:, rank].reshape(-1)


def train_epoch(model: torch.nn.Module, loader: NeighborLoader,
                optimizer: torch.optim.Optimizer,
                loss_fn: Callable[[Tensor, Tensor], Tensor] = torch.nn.
                functional.cross_entropy,
                device: Optional[torch.device] = None,
                progress: bool = False) -> float:
    r"""One pass over :obj:`loader`; the loss of each mini-batch is taken on
    its seed nodes (the first :obj:`batch.batch_size`), whose label is
    :obj:`batch.y`. Batches move to :obj:`device` if given. Returns the mean
    loss."""
    model.train()
    total, steps = 0.0, 0
    batches = loader
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(loader, desc='train', unit='batch')
    for batch in batches:
        if device is not None:
            batch = batch.to(device)
        optimizer.zero_grad()
        out = model(batch.x, batch.edge_index, batch.edge_attr)
        loss = loss_fn(out[:batch.batch_size], batch.y[:batch.batch_size])
        loss.backward()
        optimizer.step()
        total, steps = total + float(loss.detach()), steps + 1
    return total / max(steps, 1)


@torch.no_grad()
def neighbor_inference(model: torch.nn.Module, data: Data, num_layers: int,
                       batch_size: int = 1024,
                       nodes: Optional[Tensor] = None,
                       num_neighbors: Optional[Sequence[int]] = None,
                       progress: bool = False) -> Tensor:
    r"""Outputs of :obj:`nodes` (all if :obj:`None`) computed in neighbour
    mini-batches; with the default full neighbourhoods
    (:obj:`[-1] * num_layers`) they equal :func:`full_graph_inference`."""
    model.eval()
    nodes = torch.arange(data.num_nodes) if nodes is None else nodes
    num_neighbors = list(num_neighbors or [-1] * num_layers)
    loader = neighbor_loader(data, num_neighbors, input_nodes=nodes,
                             batch_size=batch_size, shuffle=False)
    if progress:
        from tqdm.auto import tqdm
        loader = tqdm(loader, desc='inference', unit='batch')
    outs = [model(b.x, b.edge_index, b.edge_attr)[:b.batch_size]
            for b in loader]
    return torch.cat(outs)


@torch.no_grad()
def full_graph_inference(model: torch.nn.Module, data: Data) -> Tensor:
    r"""Outputs of all nodes from one pass over the whole graph."""
    model.eval()
    return model(data.x, data.edge_index, data.edge_attr)


def planted_views(num_nodes: int, num_classes: int = 4,
                  widths: Sequence[int] = (16, 8), noise: float = 1.5,
                  seed: int = 0) -> Tuple[Dict[str, Tensor], Tensor]:
    r"""Synthetic views of one node set with planted classes: view
    :math:`m` places node :math:`i` at its class's centre in that view plus
    independent Gaussian noise, so each view alone is a noisy witness of the
    class and their relations agree only through it.

    Returns:
        :obj:`(views, y)`: view name -> features :math:`(N, d_m)`, and labels
        :math:`(N,)`.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (num_nodes, ), generator=gen)
    views = {}
    for m, d in enumerate(widths):
        centres = torch.randn(num_classes, d, generator=gen)
        centres = centres / centres.norm(dim=-1, keepdim=True) * math.sqrt(d)
        views[f'view{m}'] = centres[y] + noise * torch.randn(
            num_nodes, d, generator=gen)
    return views, y
