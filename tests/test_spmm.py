import torch

from pyg_lego.data.similarity import csr_pattern
from pyg_lego.nn.spmm import csr_matmul


def test_csr_matmul_matches_dense_forward_and_backward():
    gen = torch.Generator().manual_seed(0)
    n, d = 7, 3
    edge_index = torch.tensor([[0, 0, 1, 2, 2, 3, 4, 5, 6, 6],
                               [1, 4, 0, 2, 6, 5, 4, 0, 1, 3]])
    values = torch.rand(edge_index.size(1), generator=gen,
                        dtype=torch.float64).requires_grad_()
    x = torch.randn(n, d, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    pattern = csr_pattern(edge_index[0], edge_index[1], n, n, values.dtype)
    out = csr_matmul(pattern, x, values)

    dense = torch.zeros(n, n, dtype=torch.float64).index_put(
        (edge_index[0], edge_index[1]), values)
    expected = dense @ x
    assert torch.allclose(out, expected)
    grad = torch.randn(n, d, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, (values, x), grad)
    want = torch.autograd.grad(expected, (values, x), grad)
    assert torch.allclose(got[0], want[0])
    assert torch.allclose(got[1], want[1])
    assert torch.autograd.gradcheck(
        lambda v, y: csr_matmul(pattern, y, v), (values, x))
    # The cached transpose is the dense transpose.
    assert torch.equal(pattern.transposed(values.detach()).to_dense(),
                       dense.detach().t())


def test_edge_reduce_gradient_on_symmetric_and_directed_patterns():
    from pyg_lego.data.similarity import edge_reduce
    gen = torch.Generator().manual_seed(1)
    n = 9
    directed = torch.tensor([[0, 0, 1, 3, 4, 4, 6, 8],
                             [2, 5, 1, 7, 0, 8, 3, 2]])
    both = torch.cat([directed, directed.flip(0)], 1)
    key = torch.unique(both[0] * n + both[1])
    symmetric = torch.stack([key // n, key % n])
    for ei, is_symmetric in ((directed, False), (symmetric, True)):
        pattern = csr_pattern(ei[0], ei[1], n, n, torch.float64)
        assert pattern.symmetric == is_symmetric
        x = torch.randn(n, 4, generator=gen, dtype=torch.float64,
                        requires_grad=True)
        w = torch.randn(ei.size(1), generator=gen, dtype=torch.float64)
        grad, = torch.autograd.grad((edge_reduce(x, ei, pattern=pattern) *
                                     w).sum(), x)
        ref, = torch.autograd.grad(((x[ei[0]] * x[ei[1]]).sum(-1) *
                                    w).sum(), x)
        assert torch.allclose(grad, ref)
