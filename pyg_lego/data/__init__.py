from pyg_lego.data.backends import knn_recall, knn_search
from pyg_lego.data.knn import exact_knn
from pyg_lego.data.networkx import (NetworkXView, from_networkx_view,
                                    to_networkx_fused)
from pyg_lego.data.relation import (GivenGraph, RelationData,
                                    build_relation_graph, knn_pattern,
                                    relation_scores, view_features)

__all__ = [
    'GivenGraph',
    'RelationData',
    'build_relation_graph',
    'knn_pattern',
    'relation_scores',
    'view_features',
    'exact_knn',
    'knn_search',
    'knn_recall',
    'NetworkXView',
    'from_networkx_view',
    'to_networkx_fused',
]
