r"""Training over fused graphs in the ways PyG pipelines scale: neighbour
mini-batches (:mod:`~pyg_lego.training.neighbor`) and multi-process data
parallelism (:mod:`~pyg_lego.training.distributed`)."""
from pyg_lego.training.neighbor import (TorchNeighborSampler, epoch_seeds,
                                        full_graph_inference, fused_graph,
                                        neighbor_inference, neighbor_loader,
                                        planted_views, train_epoch)

__all__ = [
    'TorchNeighborSampler',
    'epoch_seeds',
    'full_graph_inference',
    'fused_graph',
    'neighbor_inference',
    'neighbor_loader',
    'planted_views',
    'train_epoch',
]
