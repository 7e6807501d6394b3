import json
import subprocess
import sys
import textwrap

import pytest
import torch

from pyg_lego import LEGO, build_relation_graph, dense
from pyg_lego.nn import GraphPowerConv, two_hop_paths
from pyg_lego.nn.path_index import PathPlan

from .conftest import dense_at, random_views, requires_cuda


def graph(n=150, widths=(6, 4, 5), k=6, dtype=torch.float64, seed=0):
    views = random_views(n, list(widths), dtype=dtype, seed=seed)
    return views, build_relation_graph(views, k=k, backend='exact')


def expand(data, P, budget, grad=True, chunk_size=1 << 22, kernel='torch'):
    attr = data.edge_attr.detach().clone().requires_grad_(grad)
    conv = GraphPowerConv(P, mode='masked', memory_budget=budget,
                          chunk_size=chunk_size, kernel=kernel)
    return attr, conv(data.edge_index, attr, num_nodes=data.num_nodes)


@pytest.mark.parametrize('P', [2, 3, 4])
def test_streamed_equals_stored_values_and_gradients(P):
    _, data = graph()
    weight = torch.randn(data.num_edges, 3, P + 1, dtype=torch.float64)
    stored_attr, stored = expand(data, P, budget=None)
    # A budget of 0 bytes stores nothing; tiny chunks give many passes.
    streamed_attr, streamed = expand(data, P, budget=0, chunk_size=2000)
    assert stored.shape == streamed.shape == (data.num_edges, 3, P + 1)
    assert torch.allclose(stored, streamed, atol=1e-12)
    (stored * weight).sum().backward()
    (streamed * weight).sum().backward()
    assert torch.allclose(stored_attr.grad, streamed_attr.grad, atol=1e-12)


def test_streamed_matches_dense_oracle():
    views, data = graph(n=40, k=5)
    _, streamed = expand(data, 3, budget=0, grad=False)
    mask, r = dense.relation_graph(views, k=5)
    expected = dense_at(dense.graph_powers(r, mask, 3, 'masked'),
                        data.edge_index)
    assert torch.allclose(streamed, expected, atol=1e-10)


def test_streamed_gradcheck():
    _, data = graph(n=10, widths=(3, 2), k=2)
    attr = data.edge_attr.detach().clone().requires_grad_(True)
    conv = GraphPowerConv(3, mode='masked', memory_budget=0, kernel='torch')
    assert torch.autograd.gradcheck(
        lambda e: conv(data.edge_index, e, num_nodes=data.num_nodes), (attr,),
        fast_mode=True)


def test_budget_decides_between_storing_and_streaming():
    _, data = graph()
    paths = two_hop_paths(data.edge_index, data.num_nodes)
    assert two_hop_paths(data.edge_index, data.num_nodes,
                         max_paths=paths.size(1)).size(1) == paths.size(1)
    assert two_hop_paths(data.edge_index, data.num_nodes,
                         max_paths=paths.size(1) - 1) is None
    per_path = 24 + 8 * 3 * 3  # ids + float64 x 3 views x P=3
    conv = GraphPowerConv(3, memory_budget=per_path * paths.size(1),
                          cached=True, kernel='torch')
    conv(data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
    assert conv._cached_paths is not None
    conv = GraphPowerConv(3, memory_budget=per_path * paths.size(1) - 1,
                          cached=True, kernel='torch')
    conv(data.edge_index, data.edge_attr, num_nodes=data.num_nodes)
    assert conv._cached_paths is None
    with pytest.raises(ValueError, match='memory_budget'):
        GraphPowerConv(3, memory_budget=-1)


@pytest.mark.parametrize('compact', [True, False])
@pytest.mark.parametrize('whole_rows', [True, False])
def test_path_plan_chunks_cover_every_path_once(compact, whole_rows):
    _, data = graph()
    paths = two_hop_paths(data.edge_index, data.num_nodes)
    plan = PathPlan(data.edge_index, data.num_nodes, chunk_size=500,
                    compact=compact, whole_rows=whole_rows)
    assert len(plan) > 1
    row = data.edge_index[0]
    starts = torch.tensor([start for start, *_ in plan.chunks])
    # Whole rows: no chunk starts inside a row (without, some do).
    inside = row[starts[1:]] == row[starts[1:] - 1]
    assert bool(inside.any()) != whole_rows
    parts = []
    for first, second, closing, hit in plan:
        assert (hit is None) == compact
        if hit is not None:
            first, second, closing = first[hit], second[hit], closing[hit]
        parts.append(torch.stack([first, second, closing]))
    streamed = torch.cat(parts, 1)
    # The stored index is the same paths, sorted by closing edge.
    order = torch.sort(streamed[2], stable=True).indices
    assert torch.equal(streamed[:, order], paths)
    assert bool((paths[2, 1:] >= paths[2, :-1]).all())
    with pytest.raises(ValueError, match='chunk_size'):
        PathPlan(data.edge_index, data.num_nodes, chunk_size=0)


def test_lego_streams_when_over_budget():
    _, data = graph(n=80, widths=(4, 3), k=4)
    model = LEGO(data.view_names, P=3, mode='masked', kernel='torch')
    stored = model.fuse(data)
    model.expansion.memory_budget = 0
    assert torch.allclose(model.fuse(data), stored, atol=1e-12)


LARGE = textwrap.dedent('''
    import json, resource, time, torch
    from pyg_lego import LEGO, build_relation_graph
    torch.manual_seed(0)
    n = 200_000
    c = torch.randn(64, 4) * 3
    views = {f'v{m}': c[torch.randint(64, (n,))] + torch.randn(n, 4)
             for m in range(2)}
    t = time.perf_counter()
    # A small HNSW: this test is about memory, recall is tested elsewhere.
    data = build_relation_graph(views, k=3, backend='faiss-hnsw',
                                knn_options={'M': 8, 'ef_construction': 20,
                                             'ef_search': 16},
                                recall_sample=0)
    out = {'edges': data.num_edges, 'build_s': time.perf_counter() - t}
    for mode in ('elementwise', 'masked', 'propagated'):
        model = LEGO(data.view_names, P=2, mode=mode)
        model.expansion.memory_budget = 64 * 2**20
        t = time.perf_counter()
        fused = model.fuse(data)
        fused.sum().backward()
        out[mode] = {'s': time.perf_counter() - t,
                     'finite': bool(torch.isfinite(fused).all()),
                     'grad': model.fusion.weight.grad is not None}
    out['peak_bytes'] = \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))
''')


def test_two_hundred_thousand_nodes_within_memory():
    r"""N x N float32 would be 160 GB; the run must stay far below."""
    # Exact kNN would take minutes at this size.
    pytest.importorskip('faiss')
    res = subprocess.run([sys.executable, '-c', LARGE],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out['edges'] > 200_000
    for mode in ('elementwise', 'masked', 'propagated'):
        assert out[mode]['finite'] and out[mode]['grad']
    assert out['peak_bytes'] < 4 * 2**30


@requires_cuda
def test_streamed_on_cuda_equals_cpu():
    _, data = graph(n=100, widths=(4, 3), k=5)
    weight = torch.randn(data.num_edges, 2, 4, dtype=torch.float64)
    cpu_attr, cpu = expand(data, 3, budget=0)
    (cpu * weight).sum().backward()
    attr = data.edge_attr.detach().cuda().requires_grad_(True)
    conv = GraphPowerConv(3, mode='masked', memory_budget=0)
    out = conv(data.edge_index.cuda(), attr, num_nodes=data.num_nodes)
    (out * weight.cuda()).sum().backward()
    assert torch.allclose(out.cpu(), cpu, atol=1e-12)
    assert torch.allclose(attr.grad.cpu(), cpu_attr.grad, atol=1e-12)


def test_masked_power_accepts_a_path_index_in_any_order():
    _, data = graph()
    paths = two_hop_paths(data.edge_index, data.num_nodes)
    shuffled = paths[:, torch.randperm(paths.size(1))]
    conv = GraphPowerConv(3)
    attr = data.edge_attr.clone().requires_grad_(True)
    out = conv(data.edge_index, attr, num_nodes=data.num_nodes,
               path_index=paths)
    grad, = torch.autograd.grad(out.square().sum(), attr)
    attr2 = data.edge_attr.clone().requires_grad_(True)
    out2 = conv(data.edge_index, attr2, num_nodes=data.num_nodes,
                path_index=shuffled)
    grad2, = torch.autograd.grad(out2.square().sum(), attr2)
    assert torch.allclose(out, out2)
    assert torch.allclose(grad, grad2)


def test_edge_reduce_csr_path_equals_chunked_path():
    from pyg_lego.data.similarity import edge_reduce
    _, data = graph()
    x = torch.randn(data.num_nodes, 7, dtype=torch.float64)
    ei = data.edge_index  # row-sorted: one sampled product on the CSR
    perm = torch.randperm(ei.size(1))
    x1 = x.clone().requires_grad_(True)
    out = edge_reduce(x1, ei)
    grad1, = torch.autograd.grad((out * out.detach()).sum(), x1)
    x2 = x.clone().requires_grad_(True)
    out2 = edge_reduce(x2, ei[:, perm], chunk_size=17)  # unsorted: chunks
    grad2, = torch.autograd.grad((out2 * out2.detach()).sum(), x2)
    assert torch.allclose(out[perm], out2)
    assert torch.allclose(out, (x[ei[0]] * x[ei[1]]).sum(-1))
    assert torch.allclose(grad1, grad2)


def test_knn_block_rows_target_cache_within_budget():
    from pyg_lego.data.knn import CACHE_BLOCK_BYTES, MIN_BLOCK_ROWS, block_rows
    n = 100_000
    rows = block_rows(n, 4)
    assert rows == max(MIN_BLOCK_ROWS, CACHE_BLOCK_BYTES // (4 * n))
    # The caller's budget always wins, down to a single row.
    assert block_rows(n, 4, memory_budget=2 * 4 * n * 3) == 3
    assert block_rows(n, 4, memory_budget=0) == 1
    assert block_rows(10, 4) == 10


def test_knn_blocks_on_cuda_take_the_gpu_budget_without_a_cache_bound(
        monkeypatch):
    from types import SimpleNamespace
    from pyg_lego.data.knn import (DEFAULT_BLOCK_BYTES,
                                   DEFAULT_GPU_BLOCK_BYTES, block_budget,
                                   block_rows)
    cuda = torch.device('cuda')  # a device type: no GPU needed
    memory = {'total': 141 * 2**30}  # an H200's
    monkeypatch.setattr(torch.cuda, 'get_device_properties',
                        lambda device: SimpleNamespace(
                            total_memory=memory['total']))
    assert block_budget(None, cuda) == DEFAULT_GPU_BLOCK_BYTES
    assert block_budget(None, 'cpu') == block_budget(None) == \
        DEFAULT_BLOCK_BYTES
    assert block_budget(5, cuda) == 5
    n = 1_000_000
    assert block_rows(n, 4, device=cuda) == \
        DEFAULT_GPU_BLOCK_BYTES // (2 * 4 * n)  # 268 rows, not 32
    assert block_rows(n, 4, device='cpu') == \
        DEFAULT_BLOCK_BYTES // (2 * 4 * n)
    assert block_rows(10_000, 4, device=cuda) == 10_000
    assert block_rows(n, 4, memory_budget=2 * 4 * n * 3, device=cuda) == 3
    # A smaller GPU: a sixteenth of its memory.
    memory['total'] = 8 * 2**30
    assert block_budget(None, cuda) == 2**29


def test_exact_knn_blocks_agree_with_one_block():
    from pyg_lego.data.knn import exact_knn
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(1))
    small = exact_knn(x, 4, memory_budget=2 * 4 * 300 * 7)  # 7-row blocks
    whole = exact_knn(x, 4, memory_budget=2**30)
    assert torch.equal(small, whole)
    assert not bool((small[0] == small[1]).any())  # no self matches


@pytest.mark.parametrize('n,k', [(1000, 5), (1000, 16), (999, 7), (100, 16),
                                 (4096, 1)])
def test_block_topk_finds_a_top_k_set(n, k):
    from pyg_lego.data.knn import block_topk
    gen = torch.Generator().manual_seed(n + k)
    s = torch.randn(37, n, generator=gen)
    s[torch.arange(37), torch.arange(37)] = float('-inf')  # own column
    s[3, -4:] = 50.0 + torch.arange(4.)  # winners in the ragged tail
    idx = block_topk(s, k)
    assert idx.shape == (37, k)
    assert torch.equal(s.gather(1, idx).sort(1).values,
                       s.topk(k, dim=1).values.sort(1).values)
    assert torch.equal(idx.sort(1).values, s.topk(k, dim=1).indices
                       .sort(1).values)  # no ties in random scores


def test_propagated_views_recomputed_beyond_the_budget(monkeypatch):
    from torch.utils import checkpoint
    views, data = graph(n=60, k=5)
    calls = []
    real = checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr('pyg_lego.nn.graph_power.checkpoint', counting)
    weight = torch.randn(data.num_edges, 3, 4, dtype=torch.float64)
    results = []
    for budget in (None, 0):
        xs = [v.clone().requires_grad_() for v in views.values()]
        attr = data.edge_attr.detach().clone().requires_grad_()
        conv = GraphPowerConv(3, mode='propagated', memory_budget=budget)
        out = conv(data.edge_index, attr, xs=xs, num_nodes=data.num_nodes)
        (out * weight).sum().backward()
        results.append([out.detach(), attr.grad] + [x.grad for x in xs])
    assert len(calls) == 3  # one per view, only under the zero budget
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-12)
    # Without gradients nothing is kept, so nothing is recomputed.
    with torch.no_grad():
        GraphPowerConv(3, mode='propagated', memory_budget=0)(
            data.edge_index, data.edge_attr, xs=list(views.values()))
    assert len(calls) == 3
