r"""The sparse path never builds an N x N tensor."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pyg_lego import LEGO, GivenGraph, build_relation_graph


class LargestTensor(TorchDispatchMode):
    r"""Records the largest number of elements of any dense tensor an op
    returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            # A sparse tensor's numel is its logical size, not its storage.
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize('mode', ['elementwise', 'masked', 'propagated'])
def test_no_quadratic_tensor_from_features(mode):
    n = 6000
    gen = torch.Generator().manual_seed(0)
    views = {'a': torch.randn(n, 16, generator=gen).requires_grad_(),
             'b': torch.randn(n, 8, generator=gen).requires_grad_()}
    # A small kNN block budget, so the blocks are far from N x N.
    with LargestTensor() as probe:
        data = build_relation_graph(views, k=5, memory_budget=8 * 2**20)
        model = LEGO(['a', 'b'], P=3, mode=mode)
        model.fuse(data).sum().backward()
    assert probe.largest < n * n / 20
    # The backward pass reached the features, through the scores.
    assert views['a'].grad is not None and views['a'].grad.abs().sum() > 0


@pytest.mark.parametrize('mode', ['elementwise', 'masked'])
def test_graph_too_large_for_dense_memory(mode):
    # N x N float32 would take 4e10 * 4 bytes = 160 GB on a 24 GiB machine.
    n = 200_000
    gen = torch.Generator().manual_seed(1)
    src = torch.arange(n).repeat_interleave(4)
    dst = torch.randint(0, n, (4 * n,), generator=gen)
    views = {'g1': GivenGraph(torch.stack([src, dst])),
             'g2': GivenGraph(torch.stack([dst, src]),
                              torch.rand(4 * n, generator=gen))}
    data = build_relation_graph(views, num_nodes=n)
    model = LEGO(['g1', 'g2'], P=3, mode=mode)
    fused = model.fuse(data)
    fused.sum().backward()
    assert fused.shape == (data.num_edges, 1)
    assert bool(torch.isfinite(fused).all())
    assert model.fusion.weight.grad is not None
