import pytest
import torch

from pyg_lego.vad.losses import (degree_variance_loss, ranking_loss,
                                 topk_mil_loss, video_scores)


def two_videos(T=32):
    r"""One anomalous video (label 1) and one normal (label 0)."""
    batch = torch.arange(2).repeat_interleave(T)
    labels = torch.tensor([1, 0])
    return batch, labels


def test_video_score_is_mean_of_top_k():
    batch = torch.tensor([0, 0, 0, 0, 1, 1])
    logits = torch.tensor([0.0, 2.0, -1.0, 1.0, -3.0, 4.0])
    s = torch.sigmoid(logits)
    got = video_scores(logits, batch, k=2)
    torch.testing.assert_close(got, torch.stack([(s[1] + s[3]) / 2,
                                                 (s[5] + s[4]) / 2]))
    # Default k = T // 16 + 1: one snippet for T < 16.
    torch.testing.assert_close(video_scores(logits, batch),
                               torch.stack([s[1], s[5]]))
    # k larger than a video takes the whole video.
    torch.testing.assert_close(video_scores(logits, batch, k=10)[1],
                               s[4:].mean())


def test_default_k_follows_video_length():
    batch = torch.zeros(32, dtype=torch.long)
    logits = torch.linspace(-3, 3, 32)
    expected = torch.sigmoid(logits).topk(3).values.mean()  # 32 // 16 + 1
    torch.testing.assert_close(video_scores(logits, batch)[0], expected)


@pytest.mark.parametrize('loss_fn', [topk_mil_loss, ranking_loss])
def test_scoring_anomalies_higher_lowers_the_loss(loss_fn):
    batch, labels = two_videos()
    flat = torch.zeros(64)
    good = flat.clone()
    good[5:9] = 4.0      # anomalous snippets of the anomalous video
    good[32:] = -4.0     # the normal video
    bad = flat.clone()
    bad[32:36] = 4.0     # the normal video scores high
    bad[:32] = -4.0
    assert loss_fn(good, batch, labels) < loss_fn(flat, batch, labels) < \
        loss_fn(bad, batch, labels)


def test_losses_have_gradients_towards_the_labels():
    batch, labels = two_videos()
    logits = torch.zeros(64, requires_grad=True)
    topk_mil_loss(logits, batch, labels).backward()
    # Descent raises the anomalous video's top snippets, lowers the normal's.
    assert (logits.grad[:32] <= 0).all() and (logits.grad[:32] < 0).any()
    assert (logits.grad[32:] >= 0).all() and (logits.grad[32:] > 0).any()


def test_ranking_terms():
    batch, labels = two_videos(T=4)
    logits = torch.tensor([0., 0., 0., 0., 0., 0., 0., 0.])
    # Equal maxima: hinge = margin; smoothness 0; sparsity = 4 * 0.5.
    torch.testing.assert_close(
        ranking_loss(logits, batch, labels, margin=1.0, smoothness=1.0,
                     sparsity=1.0), torch.tensor(1.0 + 2.0))
    jumpy = torch.tensor([10., -10., 10., -10., 0., 0., 0., 0.])
    smooth = ranking_loss(jumpy, batch, labels, smoothness=1.0, sparsity=0)
    plain = ranking_loss(jumpy, batch, labels, smoothness=0.0, sparsity=0)
    assert smooth > plain + 2.5  # three jumps of ~1 each
    # A batch of one class has no pairs: only the regularisers remain.
    one = torch.tensor([1, 1])
    assert ranking_loss(logits, batch, one, sparsity=0.0) == 0


def test_degree_variance_matches_definition():
    T = 4
    batch, labels = two_videos(T)
    ei = torch.cartesian_prod(torch.arange(T), torch.arange(T)).t()
    ei = torch.cat([ei, ei + T], dim=1)
    gen = torch.Generator().manual_seed(0)
    fused = torch.rand(ei.size(1), 1, generator=gen, requires_grad=True)
    logits = torch.tensor([3., -1., 2., 0., 0., 0., 0., 0.])
    got = degree_variance_loss(fused, ei, logits, batch, labels, alpha=0.3,
                               weight=2.0, k=2)
    g = fused.detach().view(2, T, T)
    deg = (g * (g > 0.3)).sum(-1)
    var_n = deg[1].var(unbiased=False)
    var_a = deg[0, [0, 2]].var(unbiased=False)  # top-2 logits: nodes 0, 2
    torch.testing.assert_close(got.detach(), 2.0 * (var_n - var_a)**2)
    got.backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0
    neg = degree_variance_loss(fused, ei, logits, batch, labels, alpha=0.3,
                               weight=2.0, k=2, sign=-1)
    torch.testing.assert_close(neg, -got)
    assert degree_variance_loss(fused, ei, logits, batch,
                                torch.tensor([0, 0])) == 0


def test_loss_input_errors():
    batch, labels = two_videos(T=4)
    logits = torch.zeros(8)
    with pytest.raises(ValueError, match='1-D'):
        topk_mil_loss(logits.view(2, 4), batch, labels)
    with pytest.raises(ValueError, match='one entry per snippet'):
        topk_mil_loss(logits, batch[:5], labels)
    with pytest.raises(ValueError, match='3 labels for 2 videos'):
        ranking_loss(logits, batch, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match='0 \\(normal\\) or 1'):
        topk_mil_loss(logits, batch, torch.tensor([2, 0]))
    with pytest.raises(ValueError, match='sorted'):
        topk_mil_loss(logits, batch.flip(0), labels)
    with pytest.raises(TypeError, match='floating point'):
        topk_mil_loss(logits.long(), batch, labels)
    with pytest.raises(ValueError, match='k must be >= 1'):
        topk_mil_loss(logits, batch, labels, k=0)
    with pytest.raises(ValueError, match='sign'):
        degree_variance_loss(torch.zeros(32, 1), torch.zeros(2, 32).long(),
                             logits, batch, labels, sign=2)
    with pytest.raises(ValueError, match='fused must be'):
        degree_variance_loss(torch.zeros(5, 1), torch.zeros(2, 32).long(),
                             logits, batch, labels)
