r"""Graph construction past one machine, on :mod:`torch.distributed`.

:func:`partitioned_knn` finds the exact :math:`k` nearest neighbours of the
rows one process holds among the rows all processes hold, by passing the
feature blocks around a ring of the process group;
:func:`partitioned_pattern` puts the kNN edges of several views, their
reverses and self-loops together into each process's rows of the shared
pattern of :func:`~pyg_lego.data.knn_pattern`."""
from pyg_lego.distributed.knn import (PartitionedKNN, partition_sizes,
                                      partitioned_knn, partitioned_pattern)

__all__ = [
    'PartitionedKNN',
    'partition_sizes',
    'partitioned_knn',
    'partitioned_pattern',
]
