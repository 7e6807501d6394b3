from pyg_lego.nn.path_index import two_hop_paths
from pyg_lego.nn.norm import relation_norm
from pyg_lego.nn.graph_power import GraphPowerConv
from pyg_lego.nn.fusion import CoefficientTable, LEGOFusion
from pyg_lego.nn.sparsify import TopKSparsify, drop_zero_edges, topk_mask
from pyg_lego.nn.lego import LEGO
from pyg_lego.nn.heads import (GraphSpaceHead, PropagationHead, graph_space_rows,
                             node_statistics)

__all__ = [
    'two_hop_paths',
    'relation_norm',
    'GraphPowerConv',
    'CoefficientTable',
    'LEGOFusion',
    'TopKSparsify',
    'topk_mask',
    'drop_zero_edges',
    'LEGO',
    'GraphSpaceHead',
    'graph_space_rows',
    'PropagationHead',
    'node_statistics',
]
