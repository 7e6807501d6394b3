import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from pyg_lego.vad.models import (LEGOVAD, AttentionFusion, build_model,
                                 feature_dims, model_names)
from pyg_lego.vad.video import Video, VideoGraphDataset

VIEWS = ['rgb', 'flow', 'audio']


def tiny_videos(num=6, seed=0, widths=(12, 8, 5)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num):
        n = int(rng.integers(10, 30))
        views = {v: rng.standard_normal((n, d)).astype(np.float32)
                 for v, d in zip(VIEWS, widths)}
        out.append(Video(f'v{i}', views, i % 2))
    return out


def tiny_batch(T=8, num=6, views=VIEWS):
    ds = VideoGraphDataset(tiny_videos(num), T=T, view_names=views)
    return next(iter(DataLoader(ds, batch_size=num)))


@pytest.mark.parametrize('name', model_names(VIEWS))
def test_every_model_scores_every_snippet(name):
    batch = tiny_batch()
    model = build_model(name, VIEWS, feature_dims(batch), T=8)
    out = model(batch)
    assert out.shape == (batch.num_nodes,)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert repr(model).startswith(type(model).__name__ + '(')


def test_models_score_videos_independently():
    # Shuffling other videos of the batch must not change a video's scores.
    batch = tiny_batch(num=4)
    ds = VideoGraphDataset(tiny_videos(4), T=8)
    for name in model_names(VIEWS):
        model = build_model(name, VIEWS, feature_dims(batch), T=8).eval()
        together = model(batch)
        alone = model(next(iter(DataLoader([ds[2]], batch_size=1))))
        torch.testing.assert_close(together[batch.batch == 2], alone,
                                   atol=1e-5, rtol=1e-5, msg=name)


def test_lego_on_full_length_knn_graphs():
    ds = VideoGraphDataset(tiny_videos(3), T=None, k=3)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    model = LEGOVAD(VIEWS, T=32, P=2, mode='masked')
    assert model(batch).shape == (batch.num_nodes,)


def test_lego_with_features_and_coefficients():
    batch = tiny_batch()
    model = build_model('lego+features', VIEWS, feature_dims(batch), T=8,
                        P=2, fusion='linear')
    assert model.feature_channels == 8
    logits, fused = model.forward_with_graph(batch)
    assert logits.shape == (batch.num_nodes,)
    assert fused.shape == (batch.edge_index.size(1), 1)
    table = model.coefficients()
    assert table.rows == VIEWS and len(table.cols) == 3


def test_attention_weights_are_a_distribution():
    batch = tiny_batch()
    model = AttentionFusion(VIEWS, feature_dims(batch), 8)
    w = model.view_weights(batch)
    assert w.shape == (batch.num_nodes, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(batch.num_nodes))


def test_build_model_errors():
    dims = {'rgb': 12, 'flow': 8, 'audio': 5}
    with pytest.raises(ValueError, match='unknown model'):
        build_model('transformer', VIEWS, dims, 8)
    with pytest.raises(ValueError, match="name a view after 'single:'"):
        build_model('single:depth', VIEWS, dims, 8)
    with pytest.raises(ValueError, match='no feature width'):
        build_model('concat', VIEWS, {'rgb': 12}, 8)
    with pytest.raises(ValueError, match="takes no options"):
        build_model('concat', VIEWS, dims, 8, P=3)
    with pytest.raises(ValueError, match='fixed number of snippets'):
        build_model('lego', VIEWS, dims, None)
    with pytest.raises(ValueError, match='empty'):
        build_model('lego', [], dims, 8)


def test_model_rejects_batch_without_its_views():
    batch = tiny_batch(views=['rgb', 'flow'])
    model = build_model('concat', VIEWS, {'rgb': 12, 'flow': 8, 'audio': 5},
                        8)
    with pytest.raises(ValueError, match="needs \\['audio'\\]"):
        model(batch)
    lego = build_model('lego', VIEWS, {'rgb': 12, 'flow': 8, 'audio': 5}, 8)
    with pytest.raises(ValueError, match='views'):
        lego(batch)


@pytest.mark.parametrize('name', ['lego', 'lego+features'])
def test_readouts(name):
    from pyg_lego.nn.heads import graph_space_rows
    batch = tiny_batch()
    out = {}
    for readout in ('rows', 'deviation'):
        torch.manual_seed(0)
        model = build_model(name, VIEWS, feature_dims(batch), T=8,
                            readout=readout).eval()
        assert f'readout={readout!r}' in repr(model)
        seen = {}
        first = model.head.norm if name == 'lego' else model.head.lin1
        first.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
        out[readout] = model(batch)
        fused = model.fuse(batch)
        # The head reads the readout of the fused graph (and, with
        # features, their projection after it).
        want = graph_space_rows(fused, batch.edge_index, batch.batch, 8,
                                readout)
        assert torch.equal(seen['x'][:, :want.size(1)], want)
    assert not torch.allclose(out['rows'], out['deviation'])
    with pytest.raises(ValueError, match='readout must be one of'):
        build_model(name, VIEWS, feature_dims(batch), T=8, readout='mean')


def test_configs_saved_before_readout_and_hidden_channels_load():
    from dataclasses import asdict

    from pyg_lego.vad.train import TrainConfig
    config = TrainConfig(views=VIEWS, dims={'rgb': 12, 'flow': 8,
                                            'audio': 5})
    assert config.readout == 'deviation'
    old = asdict(config)
    del old['readout']
    assert TrainConfig.from_dict(old).readout == 'rows'
    # ... and kept the head width as 'hidden'.
    del old['hidden_channels']
    old['hidden'] = 16
    assert TrainConfig.from_dict(old).hidden_channels == 16
    assert TrainConfig.from_dict(asdict(config)).readout == 'deviation'
