r"""Weak-supervision losses for video anomaly detection (the documentation's
method page, docs/method.rst, section 5):
only video labels are known, snippet scores are the instances of a
multiple-instance bag per video.

All functions take snippet *logits* :math:`(|\mathcal{V}|,)` of a
mini-batch, its :obj:`batch` vector (snippets of one video are contiguous
and in temporal order, as PyG batches them) and the video labels
:math:`(B,)` in :math:`\{0, 1\}`; snippet scores are
:math:`\sigma(\text{logit})`.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.utils import scatter, to_dense_batch

from pyg_lego.nn import node_statistics


def _check(logits: Tensor, batch: Tensor, labels: Tensor) -> int:
    if not isinstance(logits, Tensor) or logits.dim() != 1:
        raise ValueError(f"logits must be a 1-D tensor [snippets], got shape "
                         f"{list(getattr(logits, 'shape', []))}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if not isinstance(batch, Tensor) or batch.dim() != 1 or \
            batch.numel() != logits.numel():
        raise ValueError(f"batch must be a 1-D tensor with one entry per "
                         f"snippet ({logits.numel()}), got shape "
                         f"{list(getattr(batch, 'shape', []))}")
    if logits.numel() == 0:
        raise ValueError("logits is empty")
    if batch.dtype != torch.long:
        raise TypeError(f"batch must be torch.long, got {batch.dtype}")
    if bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted: the snippets of one video "
                         "must be contiguous")
    num_videos = int(batch[-1]) + 1
    labels = labels.view(-1)
    if labels.numel() != num_videos:
        raise ValueError(f"got {labels.numel()} labels for {num_videos} "
                         f"videos in the batch")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got "
                         f"{labels.unique().tolist()}")
    return num_videos


def default_k(num_snippets: Tensor) -> Tensor:
    r""":math:`k = \lfloor T / 16 \rfloor + 1` snippets per video."""
    return num_snippets // 16 + 1


def _top_k(values: Tensor, batch: Tensor, k: Optional[int]
           ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Per video, the indices (into the dense batch) of its :math:`k`
    highest values. Returns the sorted order :math:`(B, T_{max})`, the mask
    of the top-:math:`k` entries and the dense-batch validity mask."""
    dense, valid = to_dense_batch(values.detach(), batch,
                                  fill_value=float('-inf'))
    sizes = valid.sum(dim=1)
    if k is None:
        kk = default_k(sizes)
    else:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kk = torch.clamp(torch.full_like(sizes, k), max=sizes)
    order = dense.argsort(dim=1, descending=True)
    top = torch.arange(dense.size(1), device=values.device) < kk[:, None]
    return order, top, valid


def video_scores(logits: Tensor, batch: Tensor,
                 k: Optional[int] = None) -> Tensor:
    r"""Video anomaly score: the mean of the video's :math:`k` highest
    snippet scores,

    .. math::
        s_b = \frac{1}{k} \sum_{i \in \mathrm{top}_k(b)} \sigma(z_i),
        \qquad k = \lfloor T_b / 16 \rfloor + 1 \text{ by default.}

    Shapes:
        - **input:** logits :math:`(|\mathcal{V}|,)`, batch
          :math:`(|\mathcal{V}|,)`
        - **output:** :math:`(B,)`
    """
    order, top, _ = _top_k(logits, batch, k)
    dense, _ = to_dense_batch(torch.sigmoid(logits), batch)
    picked = dense.gather(1, order) * top
    return picked.sum(dim=1) / top.sum(dim=1)


def topk_mil_loss(logits: Tensor, batch: Tensor, labels: Tensor,
                  k: Optional[int] = None) -> Tensor:
    r"""Multiple-instance top-:math:`k` binary cross entropy: each video's
    score is :func:`video_scores` and is trained towards the video label,

    .. math::
        \mathcal{L} = -\frac{1}{B} \sum_b \big( y_b \log s_b +
        (1 - y_b) \log (1 - s_b) \big).

    Args:
        logits (torch.Tensor): Snippet logits :math:`(|\mathcal{V}|,)`.
        batch (torch.Tensor): Video of every snippet :math:`(|\mathcal{V}|,)`.
        labels (torch.Tensor): Video labels :math:`(B,)`.
        k (int, optional): Top snippets per video;
            :math:`\lfloor T_b / 16 \rfloor + 1` if :obj:`None`.
    """
    _check(logits, batch, labels)
    s = video_scores(logits, batch, k).clamp(1e-6, 1 - 1e-6)
    return torch.nn.functional.binary_cross_entropy(
        s, labels.view(-1).to(s.dtype))


def ranking_loss(logits: Tensor, batch: Tensor, labels: Tensor,
                 margin: float = 1.0, smoothness: float = 8e-5,
                 sparsity: float = 8e-5) -> Tensor:
    r"""The multiple-instance ranking loss of Sultani et al. ("Real-world
    Anomaly Detection in Surveillance Videos", CVPR 2018): every anomalous
    video's highest snippet score should exceed every normal video's by a
    margin, with temporal smoothness and sparsity on anomalous videos,

    .. math::
        \mathcal{L} = \frac{1}{|\mathcal{A}||\mathcal{N}|}
        \sum_{a \in \mathcal{A}, n \in \mathcal{N}} \max\big(0, \mu -
        \max_{i \in a} s_i + \max_{j \in n} s_j\big) +
        \frac{1}{|\mathcal{A}|} \sum_{a \in \mathcal{A}} \Big(
        \lambda_1 \sum_{i} (s_i - s_{i+1})^2 + \lambda_2 \sum_i s_i \Big).

    A batch without anomalous or without normal videos has no pairs; its
    hinge term is :math:`0`.

    Args:
        logits, batch, labels: As in :func:`topk_mil_loss`.
        margin (float, optional): :math:`\mu`. (default: :obj:`1.0`)
        smoothness (float, optional): :math:`\lambda_1`.
            (default: :obj:`8e-5`)
        sparsity (float, optional): :math:`\lambda_2`. (default: :obj:`8e-5`)
    """
    num_videos = _check(logits, batch, labels)
    if margin < 0 or smoothness < 0 or sparsity < 0:
        raise ValueError("margin, smoothness and sparsity must be >= 0")
    labels = labels.view(-1).bool()
    s = torch.sigmoid(logits)
    top = scatter(s, batch, 0, dim_size=num_videos, reduce='max')
    pos, neg = top[labels], top[~labels]
    loss = s.sum() * 0.0
    if pos.numel() > 0 and neg.numel() > 0:
        loss = loss + torch.relu(margin - pos[:, None] + neg[None, :]).mean()
    if pos.numel() > 0:
        anomalous = labels[batch]
        same = (batch[1:] == batch[:-1]) & anomalous[1:]
        smooth = (s[1:] - s[:-1])**2 * same
        loss = loss + (smoothness * smooth.sum() +
                       sparsity * s[anomalous].sum()) / pos.numel()
    return loss


def degree_variance_loss(fused: Tensor, edge_index: Tensor, logits: Tensor,
                         batch: Tensor, labels: Tensor, alpha: float = 0.5,
                         weight: float = 1.0, sign: float = 1.0,
                         k: Optional[int] = None) -> Tensor:
    r"""Degree-variance regulariser on the fused graph. **This is our
    reading of the LEGO paper**, whose exact equation was not available to
    us: thresholded node degrees

    .. math::
        d_i = \sum_j \mathbf{G}_{ij} \, [\mathbf{G}_{ij} > \alpha]

    have a within-video variance; the term compares the mean variance over
    the normal videos' nodes, :math:`v_\mathcal{N}`, with the mean variance
    over the top-:math:`k` nodes (highest snippet scores) of the anomalous
    videos, :math:`v_\mathcal{A}`,

    .. math::
        \mathcal{R} = \mathrm{sign} \cdot \lambda \sum_c
        \big(v_{\mathcal{N}, c} - v_{\mathcal{A}, c}\big)^2 .

    :obj:`sign=1` pulls the two variances together; :obj:`sign=-1` pushes
    them apart (unbounded below, so use a small :math:`\lambda`). A batch
    without normal or without anomalous videos gives :math:`0`.

    Args:
        fused (torch.Tensor): Fused graph :math:`(|\mathcal{E}|, C)`.
        edge_index (torch.Tensor): Its edges :math:`(2, |\mathcal{E}|)`.
        logits, batch, labels: As in :func:`topk_mil_loss`.
        alpha (float, optional): Edge threshold. (default: :obj:`0.5`)
        weight (float, optional): :math:`\lambda`. (default: :obj:`1.0`)
        sign (float, optional): :obj:`1` or :obj:`-1`. (default: :obj:`1`)
        k (int, optional): Top snippets per anomalous video;
            :math:`\lfloor T_b / 16 \rfloor + 1` if :obj:`None`.
    """
    _check(logits, batch, labels)
    if sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, got {sign}")
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    if fused.dim() == 1:
        fused = fused.unsqueeze(-1)
    if fused.dim() != 2 or edge_index.dim() != 2 or \
            edge_index.size(0) != 2 or fused.size(0) != edge_index.size(1):
        raise ValueError(f"fused must be [|E|, C] with |E| = "
                         f"{edge_index.size(-1)} (edge_index [2, |E|]), got "
                         f"{list(fused.shape)}")
    labels = labels.view(-1).bool()
    zero = fused.sum() * 0.0
    if bool(labels.all()) or not bool(labels.any()):
        return zero
    kept = fused * (fused > alpha).to(fused.dtype)
    degree, variance = node_statistics(kept, edge_index, logits.numel(),
                                       batch)
    var_normal = variance[~labels].mean(dim=0)
    order, top, _ = _top_k(logits, batch, k)
    dense, _ = to_dense_batch(degree, batch)
    picked = dense.gather(
        1, order.unsqueeze(-1).expand(-1, -1, dense.size(-1)))
    picked = picked[labels]
    top = top[labels].unsqueeze(-1).to(fused.dtype)
    count = top.sum(dim=1)
    mean = (picked * top).sum(dim=1) / count
    var_anomalous = (((picked - mean[:, None])**2 * top).sum(dim=1) /
                     count).mean(dim=0)
    return sign * weight * ((var_normal - var_anomalous)**2).sum() + zero
