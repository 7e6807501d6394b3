"""Weakly supervised video anomaly detection with LEGO fusion (the
documentation's method page, docs/method.rst, section 5)."""
from pyg_lego.vad.video import (Video, VideoGraphDataset, resample,
                                segments_to_snippets, snippets_to_frames,
                                video_graph)
from pyg_lego.vad.synthetic import make_synthetic
from pyg_lego.vad.data import FeatureFolder, load_videos
from pyg_lego.vad.metrics import frame_ap, frame_auc, frame_level_scores
from pyg_lego.vad.models import (LEGOVAD, AttentionFusion, ConcatFusion,
                                 CrossViewGCN, SingleView, SumFusion,
                                 build_model, model_names)
from pyg_lego.vad.losses import (degree_variance_loss, ranking_loss,
                                 topk_mil_loss, video_scores)

__all__ = [
    'Video',
    'VideoGraphDataset',
    'resample',
    'segments_to_snippets',
    'snippets_to_frames',
    'video_graph',
    'make_synthetic',
    'FeatureFolder',
    'load_videos',
    'frame_auc',
    'frame_ap',
    'frame_level_scores',
    'LEGOVAD',
    'SingleView',
    'ConcatFusion',
    'SumFusion',
    'AttentionFusion',
    'CrossViewGCN',
    'build_model',
    'model_names',
    'topk_mil_loss',
    'ranking_loss',
    'degree_variance_loss',
    'video_scores',
]
