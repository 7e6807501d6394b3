r"""Partitioned node classification (:mod:`pyg_lego.distributed.training`):
on 2 and 4 gloo processes with uneven blocks, the fused weights, logits,
summed gradients, losses and parameters after Adam steps equal the single
process's training of LEGO and a GCN head on the whole graph; the halo's
hidden features cross once per layer; bad input raises the same error on
every rank."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch_geometric.nn import GCNConv

from pyg_lego import LEGO
from pyg_lego.data import knn_pattern, relation_scores
from pyg_lego.distributed import (PartitionedGCN, PartitionedLEGO,
                                  PartitionedNodeClassifier,
                                  partitioned_pattern,
                                  partitioned_relation_scores,
                                  partitioned_train_step)
from pyg_lego.nn import PropagationHead, masked_numba

from .conftest import forked_worlds, raised_errors

# Uneven blocks, one of 4 nodes without a labelled node: N = 80 on a
# subgroup of 2 ranks, 150 on all 4 (one fork of 4 processes runs both).
SIZES = {2: [23, 57], 4: [41, 4, 93, 12]}
K, P = 6, 2
HIDDEN, CLASSES = 7, 3
#: (fusion kind, fused channels C, expansion mode, layers L).
CONFIGS = [('linear', 2, 'masked', 2), ('polynomial', 1, 'propagated', 3)]
STEPS, LR = 3, 0.05
# The same products on the same rows; the sums over ranks (gradients) and
# Adam's divisions add a few ulps: at most 1.4e-16 in gradients and 6.6e-15
# in parameters after 3 steps were measured.
TOL = dict(rtol=1e-10, atol=1e-12)


def graph(world):
    r"""Views, node features (the views side by side), classes and the
    labelled nodes, none of them on the 4-node block of rank 1."""
    gen = torch.Generator().manual_seed(world)
    n = sum(SIZES[world])
    views = {'a': torch.randn(n, 5, generator=gen, dtype=torch.float64),
             'b': torch.randn(n, 3, generator=gen, dtype=torch.float64)}
    y = torch.randint(CLASSES, (n,), generator=gen)
    mask = torch.rand(n, generator=gen) < 0.6
    mask[41:45] = False
    return views, torch.cat(list(views.values()), 1), y, mask


def reference(kind, channels, mode, layers):
    torch.manual_seed(channels + layers)
    lego = LEGO(['a', 'b'], P, mode, fusion=kind, out_channels=channels,
                topk=None).double()
    head = PropagationHead(8, HIDDEN, CLASSES, layers, channels, conv=GCNConv,
                           flow='target_to_source').double()
    return lego, head


def partitioned(kind, channels, mode, layers, group, num_layers=None):
    lego = PartitionedLEGO(['a', 'b'], P, mode, fusion=kind,
                           out_channels=channels, cached=True, group=group)
    head = PartitionedGCN(8, HIDDEN, CLASSES, num_layers or layers, channels,
                          cached=True, group=group)
    return PartitionedNodeClassifier(lego, head).double()


def run(world, rank, group):
    sizes = SIZES[world]
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    views, x, y, mask = graph(world)
    local = {v: t[lo:hi] for v, t in views.items()}
    x, y, mask = x[lo:hi], y[lo:hi], mask[lo:hi]
    xs = list(local.values())
    ei = partitioned_pattern(local, K, group=group)
    score, _ = partitioned_relation_scores(local, ei, group=group)
    out = {}
    for config in CONFIGS:
        model = partitioned(*config, group)
        lego, head = reference(*config)
        if rank == 0:
            model.lego.load_state_dict(lego.state_dict())
            model.head.load_state_dict(head.state_dict())
        else:  # other parameters, which the broadcast replaces
            torch.manual_seed(100 + rank)
            model.reset_parameters()
        model.broadcast_parameters()
        with torch.no_grad():
            fused, _ = model.lego(ei, score, hi - lo, xs)
            logits, _ = model(ei, score, x, xs)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        steps = []
        for _ in range(STEPS):
            loss, stats = partitioned_train_step(model, optimizer, ei, score,
                                                 x, y, mask, xs)
            steps.append((loss, stats,
                          {k: p.grad.clone()
                           for k, p in model.named_parameters()},
                          {k: p.detach().clone()
                           for k, p in model.named_parameters()}))
        out[config] = fused, logits, steps
    # The head alone, with a gradient of its input features too.
    fused = out[CONFIGS[0]][0]
    leaf = x.clone().requires_grad_()
    model = partitioned(*CONFIGS[0], group)
    model.head.load_state_dict(reference(*CONFIGS[0])[1].state_dict())
    h, stats = model.head(leaf, ei, fused)
    (h * torch.sin(torch.arange(h.numel()).view_as(h) + lo)).sum().backward()
    out['head'] = h.detach(), leaf.grad, stats
    out['errors'] = errors(world, rank, group, ei, score, x, y, mask, xs,
                           fused)
    return out


def errors(world, rank, group, ei, score, x, y, mask, xs, fused):
    last = rank == world - 1
    model = partitioned(*CONFIGS[0], group)
    head = model.head
    optimizer = torch.optim.Adam(model.parameters())

    def step(**kwargs):
        args = dict(edge_index=ei, edge_attr=score, x=x, y=y, train_mask=mask,
                    xs=xs)
        return partitioned_train_step(model, optimizer, **dict(args,
                                                               **kwargs))

    def no_grad_on_rank0():
        with torch.set_grad_enabled(rank != 0):
            return head(x, ei, fused)

    bad_y = y.clone()
    bad_y[mask] = CLASSES
    calls = {
        'width': lambda: head(x[:, :7] if last else x, ei, fused),
        'nan': lambda: head(x * float('nan') if rank == 0 else x, ei, fused),
        'dtype': lambda: head(x.float() if last else x, ei, fused),
        'fused': lambda: head(x, ei, fused[:, :1] if rank == 0 else fused),
        'fused_nan': lambda: head(x, ei, fused / 0 if last else fused),
        'rows': lambda: head(x, ei + (1 if last else 0), fused),
        'layers': lambda: partitioned(*CONFIGS[0], group,
                                      num_layers=2 + last).head(x, ei, fused),
        'grad': no_grad_on_rank0,
        'model_x': lambda: model(ei, score, x[:, :7] if last else x, xs),
        'y': lambda: step(y=bad_y if rank == 0 else y),
        'y_dtype': lambda: step(y=y.float() if last else y),
        'mask': lambda: step(train_mask=mask.long() if rank == 0 else mask),
        'unlabelled': lambda: step(train_mask=torch.zeros_like(mask)),
        'step_x': lambda: step(x=x[:, :7] if last else x),
    }
    return raised_errors(calls)


def train_reference(config, views, x, y, mask, ei):
    r"""The single process: LEGO on the whole pattern, the head on the whole
    fused graph, the mean cross entropy over all labelled nodes."""
    lego, head = reference(*config)
    score = relation_scores(views, ei)
    xs = list(views.values())
    with torch.no_grad():
        fused = lego(ei, score, xs=xs)
        logits = head(x, ei, fused)
    params = {f'lego.{k}': p for k, p in lego.named_parameters()}
    params.update({f'head.{k}': p for k, p in head.named_parameters()})
    optimizer = torch.optim.Adam(params.values(), lr=LR)
    steps = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        out = head(x, ei, lego(ei, score, xs=xs))
        loss = F.cross_entropy(out[mask], y[mask])
        loss.backward()
        optimizer.step()
        steps.append((float(loss.detach()), {k: p.grad.clone()
                                    for k, p in params.items()},
                      {k: p.detach().clone() for k, p in params.items()}))
    return fused, logits, steps


def halo_sizes(ei, sizes):
    offsets = torch.tensor([0] + sizes).cumsum(0).tolist()
    return [torch.unique(ei[1][(ei[0] >= lo) & (ei[0] < hi) &
                               ((ei[1] < lo) | (ei[1] >= hi))]).numel()
            for lo, hi in zip(offsets[:-1], offsets[1:])]


def check_world(world, got):
    views, x, y, mask = graph(world)
    ei = knn_pattern(views, K)
    halo = sum(halo_sizes(ei, SIZES[world]))
    for config in CONFIGS:
        _, channels, _, layers = config
        fused, logits, steps = train_reference(config, views, x, y, mask, ei)
        assert torch.allclose(torch.cat([g[config][0] for g in got]), fused,
                              **TOL), config
        assert torch.allclose(torch.cat([g[config][1] for g in got]), logits,
                              **TOL), config
        for t, (loss, grads, params) in enumerate(steps):
            for g in got:  # every rank holds the same loss and parameters
                got_loss, stats, got_grads, got_params = g[config][2][t]
                assert abs(got_loss - loss) < 1e-12, (config, t)
                assert got_grads.keys() == grads.keys()
                for k in grads:
                    assert torch.allclose(got_grads[k], grads[k], **TOL), \
                        (config, t, k)
                    assert torch.allclose(got_params[k], params[k], **TOL), \
                        (config, t, k)
                # Plans cached by the first forward pass: no halo requests.
                assert 'gcn/requests' not in stats and \
                    'powers/requests' not in stats
                assert stats['train/gradients'] == 8 * sum(
                    p.numel() for p in params.values())
            # Bytes sent by all ranks in one step: each layer's input rows
            # of the halo (the features, then hidden rows) once, the
            # gradients of the hidden rows back once, the degrees of the C
            # channels once each way.
            stats = [g[config][2][t][1] for g in got]
            sent = {k: sum(s.get(k, 0) for s in stats) for k in stats[0]}
            assert sent['gcn/features'] == \
                8 * halo * (8 + (layers - 1) * HIDDEN)
            assert sent['gcn/features.backward'] == \
                8 * halo * (layers - 1) * HIDDEN
            assert sent['gcn/degrees'] == sent['gcn/degrees.backward'] == \
                8 * halo * channels
    # The head alone, with the gradient of its input features.
    _, head = reference(*CONFIGS[0])
    fused = torch.cat([g[CONFIGS[0]][0] for g in got])
    leaf = x.clone().requires_grad_()
    h = head(leaf, ei, fused)
    offsets = torch.tensor([0] + SIZES[world]).cumsum(0).tolist()
    weight = torch.cat([torch.sin(torch.arange((hi - lo) * CLASSES).view(
        -1, CLASSES) + lo) for lo, hi in zip(offsets[:-1], offsets[1:])])
    (h * weight).sum().backward()
    assert torch.allclose(torch.cat([g['head'][0] for g in got]), h, **TOL)
    assert torch.allclose(torch.cat([g['head'][1] for g in got]), leaf.grad,
                          **TOL)
    for g in got:
        assert set(g['head'][2]) == {
            'checks', 'gcn/requests', 'gcn/degrees', 'gcn/features',
            'gcn/features.backward'}
    messages = {
        'width': f'PartitionedGCN: on rank {world - 1}, x must be a '
                 f'torch.Tensor of shape [n_r, F_in]',
        'nan': 'PartitionedGCN: on rank 0, x contains NaN or Inf',
        'dtype': f'on rank {world - 1}, x must have the dtype of the head',
        'fused': 'on rank 0, fused must be a torch.Tensor of shape [E_r, C]',
        'fused_nan': f'on rank {world - 1}, fused contains NaN or Inf',
        'rows': f'edge_index on rank {world - 1} has rows outside',
        'layers': 'same in_channels, hidden_channels, out_channels, '
                  'num_layers and channels',
        'grad': 'same gradient mode',
        'model_x': f'PartitionedNodeClassifier: on rank {world - 1}, x must '
                   f'be a torch.Tensor',
        'y': 'partitioned_train_step: on rank 0, y must be a torch.long',
        'y_dtype': f'on rank {world - 1}, y must be a torch.long',
        'mask': 'on rank 0, train_mask must be a torch.bool tensor',
        'unlabelled': 'no rank has a labelled node',
        'step_x': f'PartitionedNodeClassifier: on rank {world - 1}, x must',
    }
    for g in got:  # every rank raised, with the same message
        for what, message in messages.items():
            assert g['errors'][what] is not None and \
                message in g['errors'][what], (what, g['errors'][what])
    assert [g['errors'] for g in got] == [got[0]['errors']] * world


@pytest.fixture
def torch_kernels(monkeypatch):
    r"""References without numba, whose kernels compile for 15 s."""
    monkeypatch.setattr(masked_numba, 'available', lambda: False)


def test_partitioned_training_equals_one_process(tmp_path, torch_kernels):
    # The workers run no numba (torch_kernels) and one thread each.
    got = forked_worlds(run, tmp_path)
    check_world(4, [g[4] for g in got])
    check_world(2, [g[2] for g in got[:2]])


def test_one_process(tmp_path, torch_kernels):
    with pytest.raises(ValueError, match='num_layers must be an integer'):
        PartitionedGCN(8, HIDDEN, CLASSES, num_layers=0)
    with pytest.raises(ValueError, match='dropout must be in'):
        PartitionedGCN(8, HIDDEN, CLASSES, dropout=1.0)
    lego = PartitionedLEGO(['a', 'b'], out_channels=2)
    with pytest.raises(ValueError, match='fuses 2 channels but the head '
                                         'expects 1'):
        PartitionedNodeClassifier(lego, PartitionedGCN(8, HIDDEN, CLASSES))
    with pytest.raises(ValueError, match='same process group'):
        PartitionedNodeClassifier(lego, PartitionedGCN(
            8, HIDDEN, CLASSES, channels=2, group=object()))
    model = PartitionedNodeClassifier(lego, PartitionedGCN(
        8, HIDDEN, CLASSES, channels=2))
    assert repr(model) == (
        "PartitionedNodeClassifier(PartitionedLEGO(views=['a', 'b'], P=2, "
        "mode='masked', fusion='linear', out_channels=2), "
        "PartitionedGCN(8, 3, hidden_channels=7, num_layers=2, channels=2))")
    views, x, y, mask = graph(2)
    ei = knn_pattern(views, K)
    score = relation_scores(views, ei)
    with pytest.raises(RuntimeError, match='init_process_group'):
        model(ei, score, x.float())
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/init',
                            rank=0, world_size=1)
    try:
        # One process is the single-process training, with no halo; the
        # dropout masks are drawn alike from the same seed.
        config = ('linear', 2, 'masked', 2)
        lego, head = reference(*config)
        head.dropout = 0.5
        model = partitioned(*config, None)
        model.head.dropout = 0.5
        model.lego.load_state_dict(lego.state_dict())
        model.head.load_state_dict(head.state_dict())
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        ref_optimizer = torch.optim.Adam(
            list(lego.parameters()) + list(head.parameters()), lr=LR)
        for _ in range(2):
            torch.manual_seed(0)
            loss, stats = partitioned_train_step(model, optimizer, ei, score,
                                                 x, y, mask)
            torch.manual_seed(0)
            ref_optimizer.zero_grad()
            ref = F.cross_entropy(head(x, ei, lego(ei, score))[mask],
                                  y[mask])
            ref.backward()
            ref_optimizer.step()
            assert abs(loss - float(ref.detach())) < 1e-12
            assert {v for k, v in stats.items()
                    if not k.startswith('train/')} == {0}
        for k, p in head.named_parameters():
            assert torch.allclose(model.head.get_parameter(k), p, **TOL), k
    finally:
        dist.destroy_process_group()
