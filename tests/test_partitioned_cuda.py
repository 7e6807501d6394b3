r"""The partitioned pipeline on CUDA tensors over nccl: one process and one
rank (a machine with one GPU), so that every collective runs on the device;
equal to the single process on the same device. Skipped without a GPU."""
import pytest
import torch
import torch.distributed as dist

from pyg_lego import LEGO
from pyg_lego.data import knn_pattern, relation_scores
from pyg_lego.distributed import (PartitionedLEGO, partitioned_graph_powers,
                                  partitioned_pattern,
                                  partitioned_relation_scores)
from pyg_lego.nn import GraphPowerConv

from .conftest import free_port, requires_cuda


@pytest.fixture
def nccl():
    if not dist.is_nccl_available():
        pytest.skip('torch was built without nccl')
    torch.cuda.set_device(0)
    dist.init_process_group('nccl',
                            init_method=f'tcp://127.0.0.1:{free_port()}',
                            rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@requires_cuda
def test_nccl_pipeline_equals_one_process(nccl):
    gen = torch.Generator().manual_seed(0)
    views = {'a': torch.randn(60, 5, generator=gen, dtype=torch.float64),
             'b': torch.randn(60, 3, generator=gen, dtype=torch.float64)}
    views = {v: x.cuda() for v, x in views.items()}
    ei = partitioned_pattern(views, 6)
    assert ei.device.type == 'cuda'
    assert torch.equal(ei, knn_pattern(views, 6))
    scores, _ = partitioned_relation_scores(views, ei)
    torch.testing.assert_close(scores, relation_scores(views, ei))
    powers, _ = partitioned_graph_powers(ei, scores, 60, 2)
    torch.testing.assert_close(powers, GraphPowerConv(2, kernel='torch')(
        ei, scores))
    xs = list(views.values())
    prop, _ = partitioned_graph_powers(ei, scores, 60, 2, 'propagated',
                                       xs=xs)
    torch.testing.assert_close(prop, GraphPowerConv(2, 'propagated')(
        ei, scores, xs))
    torch.manual_seed(0)
    ref = LEGO(['a', 'b'], 2, 'masked', 'linear', topk=None).double().cuda()
    model = PartitionedLEGO(['a', 'b'], 2).double().cuda()
    model.load_state_dict(ref.state_dict())
    fused, _ = model(ei, scores, 60, xs)
    torch.testing.assert_close(fused, ref(ei, scores, xs=xs))
    fused.sum().backward()
    model.reduce_gradients()
    assert model.fusion.weight.grad.device.type == 'cuda'
