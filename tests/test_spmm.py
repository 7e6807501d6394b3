import torch

from pyg_lego.data.similarity import row_csr
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
    adj = row_csr(edge_index[0], edge_index[1], n, n, values.detach())
    out = csr_matmul(adj, x, values)

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
        lambda v, y: csr_matmul(adj, y, v), (values, x))
