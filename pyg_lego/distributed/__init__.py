r"""Graph construction and fusion past one machine, on
:mod:`torch.distributed`.

:func:`partitioned_knn` finds the exact :math:`k` nearest neighbours of the
rows one process holds among the rows all processes hold, by passing the
feature blocks around a ring of the process group;
:func:`partitioned_pattern` puts the kNN edges of several views, their
reverses and self-loops together into each process's rows of the shared
pattern of :func:`~pyg_lego.data.knn_pattern`.
:func:`partitioned_relation_scores` scores each process's rows of the
pattern in every view, :func:`partitioned_graph_powers` expands them into
their graph powers and :class:`PartitionedLEGO` fuses them, each fetching
only the rows of other processes that its edges need (halo exchanges by
:func:`~torch.distributed.all_to_all_single`). ``python -m
pyg_lego.distributed`` runs them all as a job of one process per rank
(:func:`run_pipeline`), writing each rank's shards and resuming from them."""
from pyg_lego.distributed.expansion import (PartitionedLEGO,
                                            partitioned_graph_powers)
from pyg_lego.distributed.knn import (PartitionedKNN, partition_sizes,
                                      partitioned_knn, partitioned_pattern)
from pyg_lego.distributed.pipeline import (PipelineConfig, run_pipeline,
                                           synthetic_rows)
from pyg_lego.distributed.relation import partitioned_relation_scores
from pyg_lego.distributed.training import (PartitionedGCN,
                                           PartitionedNodeClassifier,
                                           partitioned_train_step)

__all__ = [
    'PartitionedGCN',
    'PartitionedKNN',
    'PartitionedLEGO',
    'PartitionedNodeClassifier',
    'PipelineConfig',
    'partition_sizes',
    'partitioned_graph_powers',
    'partitioned_knn',
    'partitioned_pattern',
    'partitioned_relation_scores',
    'partitioned_train_step',
    'run_pipeline',
    'synthetic_rows',
]
