r"""The torch code that CUDA runs, checked on the CPU.

No host round trip in the hot loops. On a GPU, reading a value back to the
host (``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``) or an op whose
output size depends on the data (``nonzero``, boolean-mask indexing,
``unique``, ``bincount``) waits for every queued kernel. These tests count
such calls on the CPU, where the same torch code runs, and check that their
number does not grow with the number of blocks, lists, chunks or orders a
stage loops over: a round trip added inside one of these loops fails here,
without a GPU. Where a GPU is present, the same tests count the
synchronisations CUDA itself reports (``torch.cuda.set_sync_debug_mode``).

Every tensor made where its inputs are. Run with a default device of
``'meta'``, the pipeline on CPU inputs fails on any tensor that a factory
(``arange``, ``zeros``, ``randperm``, a sparse constructor) makes on the
default device rather than on its inputs' device: on CUDA inputs that tensor
would land on the CPU, and under a user's ``torch.set_default_device('cuda')``
on the GPU beside CPU inputs.
"""
import warnings
from collections import Counter
from typing import Dict, Tuple

import pytest
import torch
from torch.overrides import TorchFunctionMode

from pyg_lego import LEGO, build_relation_graph
from pyg_lego.data import GivenGraph
from pyg_lego.data.ivf import TorchIVF
from pyg_lego.data.knn import exact_knn
from pyg_lego.data.similarity import edge_reduce
from pyg_lego.nn import GraphPowerConv, masked_numba, relation_norm
from pyg_lego.nn.graph_power import StreamedMaskedPower
from pyg_lego.nn.path_index import PathPlan, _torch_paths

from .conftest import CUDA, random_views

#: Tensor methods and torch functions that read values back to the host.
READS = {'item', 'tolist', 'numpy', 'cpu', '__bool__', '__int__',
         '__float__', '__index__'}
#: Ops whose output size depends on the data: the host waits to learn it.
DATA_SIZED = {'nonzero', 'argwhere', 'masked_select', 'unique',
              'unique_consecutive', 'bincount'}


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool
               for p in parts)


class HostSyncs(TorchFunctionMode):
    r"""Counts, by op name, the calls that wait for the device on a GPU."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', '')
        if name in READS or name in DATA_SIZED:
            self.calls[name] += 1
        elif name == 'repeat_interleave' and \
                kwargs.get('output_size') is None and \
                isinstance(args[1] if len(args) > 1 else
                           kwargs.get('repeats'), torch.Tensor):
            self.calls[name] += 1
        elif name == 'where' and len(args) + len(kwargs) == 1:
            self.calls[name] += 1
        elif name == 'to' and any(str(a) == 'cpu' for a in
                                  (*args[1:], *kwargs.values())):
            self.calls[name] += 1
        elif name in ('__getitem__', '__setitem__') and _bool_index(args[1]):
            # A scalar written through a mask is a masked fill: no sync.
            if name == '__getitem__' or isinstance(args[2], torch.Tensor):
                self.calls[name] += 1
        return func(*args, **kwargs)


@pytest.fixture(params=['cpu', pytest.param('cuda', marks=CUDA)])
def device(request) -> str:
    return request.param


def syncs(device: str, fn, *args, **kwargs
          ) -> Tuple[Dict[str, int], object]:
    r"""The host round trips of :obj:`fn` by op name on the CPU, or on CUDA
    its synchronisations as CUDA reports them, :obj:`{'sync': n}` (none
    counts as :obj:`{}`); and what :obj:`fn` returns."""
    if device == 'cpu':
        with HostSyncs() as mode:
            out = fn(*args, **kwargs)
        return dict(mode.calls), out
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            out = fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    count = sum('synchroniz' in str(w.message) for w in caught)
    return ({'sync': count} if count else {}), out


def total(calls: Dict[str, int]) -> int:
    return sum(calls.values())


def test_the_counter_sees_host_reads(device):
    x = torch.arange(6., device=device)
    reads = {'item': lambda: x.sum().item(),
             '__bool__': lambda: bool((x > 2).any()),
             '__getitem__': lambda: x[x > 2],
             'nonzero': lambda: x.nonzero(),
             'tolist': lambda: x.tolist(),
             'bincount': lambda: torch.bincount(x.long()),
             'to': lambda: x.to('cpu'),
             'repeat_interleave': lambda: x.repeat_interleave(x.long())}
    for name, read in reads.items():
        calls, _ = syncs(device, read)
        # On CUDA, each waits at least once (by its own count).
        assert (calls == {name: 1}) if device == 'cpu' else \
            (total(calls) >= 1), name
    # What stays on the device is not counted.
    calls, _ = syncs(device, lambda: (
        x.masked_fill(x > 2, 0), x.topk(2),
        x.repeat_interleave(x.long(), output_size=15)))
    assert calls == {}


def test_exact_knn_reads_back_nothing_per_block(device, monkeypatch):
    # The torch path, the one a GPU runs: once this process has scored
    # enough pairs, a CPU search selects with the compiled loop instead,
    # which takes a numpy view (no copy, no device) of every block.
    from pyg_lego.data import knn
    monkeypatch.setattr(knn, 'COMPILED_MIN_SCORES', float('inf'))
    x = torch.randn(640, 8, device=device)
    # 640 rows in one block, and in blocks of the minimum 64 rows.
    one, ref = syncs(device, exact_knn, x, 5,
                     memory_budget=2 * 640 * 4 * 640)
    ten, out = syncs(device, exact_knn, x, 5,
                     memory_budget=2 * 640 * 4 * 64)
    assert torch.equal(out, ref)
    assert one == ten


def test_torch_ivf_reads_back_nothing_per_list_or_iteration(device):
    x = torch.randn(800, 8, device=device)
    build, search = {}, {}
    for nlist, iters in ((4, 1), (16, 6)):
        build[nlist], index = syncs(device, TorchIVF, x, nlist,
                                    iters=iters)
        nodes = torch.arange(800, device=device)
        search[nlist], (_, ids) = syncs(device, index.search, nodes, 5,
                                        nprobe=2)
        assert ids.shape == (800, 5)
    assert build[4] == build[16]
    assert search[4] == search[16]
    if device == 'cpu':
        # The list sizes and the probed lists come to the host once each.
        assert search[4] == {'bincount': 1, 'tolist': 2}


def graph_on(device, n=200, widths=(6, 4), k=6):
    views = {name: v.to(device) for name, v in
             random_views(n, list(widths)).items()}
    return views, build_relation_graph(views, k=k, backend='exact')


def test_streamed_masked_power_reads_back_nothing_per_chunk(device):
    _, data = graph_on(device)
    ei, n = data.edge_index, data.num_nodes
    a = relation_norm(ei, data.edge_attr, n).detach()
    counts, outs = [], []
    for chunk in (1 << 22, 1000):
        # Chunks as on CUDA: not compacted, so nothing is read back.
        plan = PathPlan(ei, n, chunk, compact=False)
        x = a.clone().requires_grad_(True)

        def run():
            out = StreamedMaskedPower.apply(x, plan, 3)
            out.sum().backward()
            return out
        calls, out = syncs(device, run)
        counts.append(calls)
        outs.append((out.detach(), x.grad))
    assert len(plan) > 10
    assert counts[0] == counts[1] == {}
    torch.testing.assert_close(outs[0], outs[1])


def test_torch_path_index_reads_back_once_per_chunk(device):
    _, data = graph_on(device)
    ei, n = data.edge_index, data.num_nodes
    one, ref = syncs(device, _torch_paths, ei, n, 1 << 22, None)
    many, out = syncs(device, _torch_paths, ei, n, 1000, None)
    assert torch.equal(out, ref)
    chunks = len(PathPlan(ei, n, 1000, whole_rows=True))
    assert chunks > 10
    # The size of each chunk's paths (one nonzero), and nothing else.
    extra = Counter(many)
    extra.subtract(one)
    if device == 'cpu':
        assert +extra == Counter(nonzero=chunks - 1)
    else:
        assert total(extra) == chunks - 1


def test_scores_and_propagation_read_back_nothing_per_chunk_or_order(
        device):
    views, data = graph_on(device, n=300, k=5)
    ei, n = data.edge_index, data.num_nodes
    x = views['v0']
    # The edge-chunked scores (the path without a CSR pattern, as for RBF).
    one, ref = syncs(device, edge_reduce, x, ei, sqdist=True,
                     chunk_size=1 << 20)
    many, out = syncs(device, edge_reduce, x, ei, sqdist=True,
                      chunk_size=100)
    assert ei.size(1) > 10 * 100
    assert one == many
    torch.testing.assert_close(out, ref)
    xs = list(views.values())
    counts = [syncs(device, GraphPowerConv(P, mode='propagated'), ei,
                    data.edge_attr, xs=xs, num_nodes=n)[0]
              for P in (2, 5)]
    assert counts[0] == counts[1]


def test_masked_orders_read_back_nothing_per_order(monkeypatch, device):
    # Without numba, as on CUDA: the torch path index and sparse products.
    monkeypatch.setattr(masked_numba, 'available', lambda: False)
    _, data = graph_on(device)
    counts = []
    for P in (2, 5):
        attr = data.edge_attr.clone().requires_grad_(True)

        def run():
            out = GraphPowerConv(P, mode='masked')(
                data.edge_index, attr, num_nodes=data.num_nodes)
            out.sum().backward()
        counts.append(syncs(device, run)[0])
    assert 'numpy' not in counts[0]
    assert counts[0] == counts[1]


@pytest.mark.parametrize('numba', [True, False])
def test_every_tensor_is_made_where_its_inputs_are(monkeypatch, numba):
    if not numba:  # the torch kernels, as on CUDA
        monkeypatch.setattr(masked_numba, 'available', lambda: False)
    views = random_views(300, [6, 4], dtype=torch.float32)
    modes = [('elementwise', {}), ('masked', {}),
             ('masked', {'memory_budget': 0}), ('propagated', {})]
    models = [LEGO(list(views), P=3, mode=mode, out_channels=2, **kw)
              for mode, kw in modes]

    # A zero row dropped, and a given graph among the views.
    zeroed = dict(views, v0=views['v0'].clone().index_fill_(0,
                                                           torch.tensor(7),
                                                           0.0))
    ring = torch.arange(300)
    given = GivenGraph(torch.stack([ring, (ring + 1) % 300]),
                       torch.rand(300))

    def pipeline():
        outs = []
        data = build_relation_graph({**zeroed, 'g': given}, k=5,
                                    zero_rows='drop', backend='exact')
        outs += [data.edge_index, data.edge_attr, data.n_id]
        for backend in ('exact', 'torch-ivf'):
            data = build_relation_graph(views, k=5, backend=backend)
            outs += [data.edge_index, data.edge_attr]
        for model in models:
            attr = data.edge_attr.clone().requires_grad_(True)
            out = model(data.edge_index, attr, xs=list(views.values()),
                        num_nodes=data.num_nodes)
            out.sum().backward()
            outs += [out.detach(), attr.grad]
        return outs
    ref = pipeline()
    with torch.device('meta'):
        outs = pipeline()
    assert all(o.device.type == 'cpu' for o in outs)
    for a, b in zip(outs, ref):
        assert torch.equal(a, b)
