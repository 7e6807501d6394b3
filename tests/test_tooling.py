r"""The library under its users' tooling: :func:`torch.compile` without graph
breaks, :obj:`state_dict` round trips (including a model trained and resumed
by the :obj:`pyg-lego vad` CLI), identical results for identical seeds, and
every public module moving with :meth:`~torch.nn.Module.to` and
:meth:`~torch.nn.Module.double`.

What is compiled: :class:`GraphPowerConv` and :class:`LEGOFusion` (and
:class:`LEGO`, which chains them) on the :obj:`edge_index` path, given a
coalesced :obj:`edge_index`, :obj:`num_nodes` and, for the masked mode, a
:obj:`path_index` built outside the compiled region by
:func:`~pyg_lego.nn.two_hop_paths` (its output size depends on the data).
"""
import io

import pytest
import torch
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GraphConv

from pyg_lego import LEGO, build_relation_graph
from pyg_lego.nn import (GraphPowerConv, GraphSpaceHead, LEGOFusion,
                         PropagationHead, two_hop_paths)

from .conftest import random_views, requires_cuda

MODES = ['elementwise', 'masked', 'propagated']


@pytest.fixture(scope='module')
def graph():
    views = random_views(10, [4, 3], dtype=torch.float32, seed=2)
    data = build_relation_graph(views, k=3)
    data.path_index = two_hop_paths(data.edge_index, data.num_nodes)
    return data


def _inputs(data):
    args = (data.edge_index, data.edge_attr)
    kwargs = dict(xs=[data.x_v0, data.x_v1], num_nodes=data.num_nodes,
                  path_index=data.path_index)
    return args, kwargs


@pytest.mark.parametrize('mode', MODES)
def test_expansion_and_fusion_trace_without_graph_breaks(graph, mode):
    torch._dynamo.reset()
    args, kwargs = _inputs(graph)
    conv = GraphPowerConv(2, mode=mode)
    explained = torch._dynamo.explain(conv)(*args, **kwargs)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    fusion = LEGOFusion(2, 2, out_channels=2, rank=2)
    explained = torch._dynamo.explain(fusion)(conv(*args, **kwargs))
    assert explained.graph_break_count == 0, explained.break_reasons
    # The whole model, compiled through AOTAutograd: same values and
    # gradients as eager.
    model = LEGO(graph.view_names, P=2, mode=mode, out_channels=2)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    out = compiled(*args, **kwargs)
    ref = model(*args, **kwargs)
    assert torch.allclose(out, ref, atol=1e-6)
    grad, = torch.autograd.grad(out.sum(), model.fusion.weight)
    ref_grad, = torch.autograd.grad(ref.sum(), model.fusion.weight)
    assert torch.allclose(grad, ref_grad, atol=1e-5)


def test_inductor_compiled_lego_matches_eager(graph):
    # One inductor compile (C++ code generation on CPU), kept to one small
    # model because compiling costs seconds.
    torch._dynamo.reset()
    args, kwargs = _inputs(graph)
    model = LEGO(graph.view_names, P=3, mode='masked', fusion='polynomial')
    compiled = torch.compile(model, fullgraph=True)
    assert torch.allclose(compiled(*args, **kwargs), model(*args, **kwargs),
                          atol=1e-6)


def test_compiled_expansion_rejects_unsorted_input(graph):
    torch._dynamo.reset()
    args, kwargs = _inputs(graph)
    conv = torch.compile(GraphPowerConv(2, mode='elementwise'),
                         backend='aot_eager', fullgraph=True)
    flipped = args[0].flip(1)
    with pytest.raises(RuntimeError, match='coalesced'):
        conv(flipped, args[1], num_nodes=graph.num_nodes)


def _roundtrip(module):
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize('kind,rank', [('linear', None), ('polynomial', None),
                                       ('polynomial', 2)])
def test_lego_state_dict_round_trip(graph, kind, rank):
    torch.manual_seed(0)
    model = LEGO(graph.view_names, P=2, fusion=kind, rank=rank,
                 out_channels=2)
    with torch.no_grad():
        model.fusion.weight.mul_(torch.rand_like(model.fusion.weight))
    torch.manual_seed(1)
    fresh = LEGO(graph.view_names, P=2, fusion=kind, rank=rank,
                 out_channels=2)
    assert not torch.equal(fresh.fuse(graph), model.fuse(graph))
    fresh.load_state_dict(_roundtrip(model))
    assert torch.equal(fresh.fuse(graph), model.fuse(graph))
    assert fresh.coefficients().to_dict() == model.coefficients().to_dict()
    other = LEGO(graph.view_names, P=3, fusion=kind, rank=rank,
                 out_channels=2)
    with pytest.raises(RuntimeError, match='size mismatch'):
        other.load_state_dict(_roundtrip(model))


def test_cli_trained_model_resumes_and_reloads(tmp_path):
    from pyg_lego.cli import main
    from pyg_lego.vad.synthetic import make_synthetic
    from pyg_lego.vad.train import load_checkpoint, model_from_checkpoint
    from pyg_lego.vad.video import VideoGraphDataset
    tiny = ['vad', 'train', '--num-train', '16', '--num-test', '8', '--T', '8',
            '--batch-size', '8', '--quiet', '--mode', 'elementwise']
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert main(tiny + ['--epochs', '2', '--out', str(straight)]) == 0
    assert main(tiny + ['--epochs', '1', '--out', str(split)]) == 0
    assert main(tiny + ['--epochs', '2', '--out', str(split),
                        '--resume']) == 0
    a = load_checkpoint(str(straight / 'checkpoint.pt'))
    b = load_checkpoint(str(split / 'checkpoint.pt'))
    assert a['epoch'] == b['epoch'] == 2
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    # The state_dict alone rebuilds a model that scores like the original.
    model = model_from_checkpoint(a)
    again = model_from_checkpoint(a)
    again.load_state_dict(_roundtrip(model))
    _, test = make_synthetic(0, 4, seed=0)
    batch = next(iter(DataLoader(VideoGraphDataset(test, T=8),
                                 batch_size=4)))
    model.eval(), again.eval()
    assert torch.equal(model(batch), again(batch))


def _seeded_run(seed):
    torch.manual_seed(seed)
    views = {'a': torch.randn(40, 6), 'b': torch.randn(40, 3)}
    data = build_relation_graph(views, k=5)
    lego = LEGO(data.view_names, P=2, mode='propagated', out_channels=2)
    head = PropagationHead(6, 8, 1, channels=2, conv=GraphConv)
    opt = torch.optim.Adam(list(lego.parameters()) + list(head.parameters()),
                           lr=0.05)
    target = torch.randn(40, 1)
    for _ in range(3):
        opt.zero_grad()
        out = head(data.x_a, data.edge_index, lego.fuse(data))
        torch.nn.functional.mse_loss(out, target).backward()
        opt.step()
    return lego.fusion.weight.detach(), out.detach()


def test_identical_seeds_give_identical_results_on_cpu():
    w1, o1 = _seeded_run(7)
    w2, o2 = _seeded_run(7)
    w3, _ = _seeded_run(8)
    assert torch.equal(w1, w2) and torch.equal(o1, o2)
    assert not torch.equal(w1, w3)


def _modules(data):
    return [
        ('GraphPowerConv', GraphPowerConv(2, mode='propagated'),
         lambda m, d: m(d.edge_index, d.edge_attr, xs=[d.x_v0, d.x_v1])),
        ('LEGOFusion', LEGOFusion(2, 2, out_channels=2),
         lambda m, d: m(torch.stack([d.edge_attr] * 3, dim=-1))),
        ('LEGO', LEGO(data.view_names, P=2, mode='masked'),
         lambda m, d: m.fuse(d)),
        ('GraphSpaceHead', GraphSpaceHead(data.num_nodes, channels=1),
         lambda m, d: m(d.edge_attr[:, :1], d.edge_index)),
        ('PropagationHead', PropagationHead(4, 8, 2, channels=2),
         lambda m, d: m(d.x_v0, d.edge_index, d.edge_attr)),
    ]


def _cast(data, dtype=None, device=None):
    out = data.clone()
    for key in ('x_v0', 'x_v1', 'edge_attr'):
        out[key] = out[key].to(device=device, dtype=dtype)
    out.edge_index = out.edge_index.to(device)
    out.path_index = out.path_index.to(device)
    return out


@pytest.mark.parametrize('index', range(5), ids=lambda i: [
    'GraphPowerConv', 'LEGOFusion', 'LEGO', 'GraphSpaceHead',
    'PropagationHead'][i])
def test_every_module_moves_with_double(graph, index):
    torch.manual_seed(0)
    name, module, run = _modules(graph)[index]
    ref = run(module, graph)
    double = module.double()
    assert all(p.dtype == torch.float64 for p in double.parameters())
    out = run(double, _cast(graph, torch.float64))
    assert out.dtype == torch.float64, name
    assert torch.allclose(out.float(), ref, atol=1e-5), name


@requires_cuda
@pytest.mark.parametrize('index', range(5))
def test_every_module_moves_to_cuda(graph, index):
    torch.manual_seed(0)
    name, module, run = _modules(graph)[index]
    ref = run(module, graph)
    moved = module.to('cuda')
    assert all(p.is_cuda for p in moved.parameters())
    out = run(moved, _cast(graph, device='cuda'))
    assert out.is_cuda, name
    assert torch.allclose(out.cpu(), ref, atol=1e-5), name
