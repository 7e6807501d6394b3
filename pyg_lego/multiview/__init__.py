r"""Multi-view node classification: data sets, baselines and the
semi-supervised runner that compares LEGO's fused graph with them."""
from pyg_lego.multiview.datasets import (MultiViewData, breast_cancer_views,
                                         digits_views, multiplex_sbm,
                                         uci_multifeature_views,
                                         with_corrupted_views)
from pyg_lego.multiview.baselines import (GNN, Graph, SemanticAttentionGNN,
                                          knn_graph, label_propagation,
                                          mean_normalized_adjacency)
from pyg_lego.multiview.snf import snf
from pyg_lego.multiview.lego_classifier import LEGOClassifier, expand
from pyg_lego.multiview.experiment import (Context, Method, default_methods,
                                           make_split, run_benchmark,
                                           summarize, to_markdown)

__all__ = [
    'MultiViewData', 'digits_views', 'breast_cancer_views',
    'uci_multifeature_views', 'multiplex_sbm', 'with_corrupted_views',
    'GNN', 'Graph', 'SemanticAttentionGNN', 'snf', 'knn_graph', 'label_propagation',
    'mean_normalized_adjacency', 'LEGOClassifier', 'expand', 'Context',
    'Method', 'default_methods', 'make_split', 'run_benchmark', 'summarize',
    'to_markdown',
]
