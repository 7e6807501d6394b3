r"""Results of video anomaly detection runs: mean and spread over seeds,
markdown tables, and figures (score curves against ground truth, LEGO's
coefficient heatmap). matplotlib is imported lazily."""
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from pyg_lego.vad.video import Video, segments_to_snippets, snippets_to_frames


def summarize(per_seed: Mapping[str, Sequence[Mapping[str, float]]]
              ) -> List[Dict[str, Any]]:
    r"""Mean and (population) standard deviation of frame AUC and AP over
    seeds, one row per model, in the given order."""
    rows = []
    for model, runs in per_seed.items():
        auc = np.array([r['auc'] for r in runs])
        ap = np.array([r['ap'] for r in runs])
        rows.append({'model': model, 'auc': float(auc.mean()),
                     'auc_std': float(auc.std()), 'ap': float(ap.mean()),
                     'ap_std': float(ap.std()), 'seeds': len(runs)})
    return rows


def results_markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    r"""A markdown table of :obj:`rows` (:obj:`model`, :obj:`auc`,
    :obj:`ap`, and with :obj:`auc_std`, :obj:`ap_std`, :obj:`seeds` the
    spread over seeds), in percent."""
    spread = any('auc_std' in r for r in rows)
    lines = [f'### {title}', '']
    if spread:
        lines += ['| model | frame AUC (%) | frame AP (%) | seeds |',
                  '|---|---|---|---|']
        for r in rows:
            lines.append(f"| {r['model']} | {100 * r['auc']:.2f} ± "
                         f"{100 * r['auc_std']:.2f} | {100 * r['ap']:.2f} ± "
                         f"{100 * r['ap_std']:.2f} | {r['seeds']} |")
    else:
        lines += ['| model | frame AUC (%) | frame AP (%) |', '|---|---|---|']
        for r in rows:
            lines.append(f"| {r['model']} | {100 * r['auc']:.2f} | "
                         f"{100 * r['ap']:.2f} |")
    return '\n'.join(lines) + '\n'


def pick_videos(videos: Sequence[Video], num: int = 4) -> List[int]:
    r"""Indices of up to :obj:`num` test videos to draw: anomalous videos of
    distinct categories first, then one normal video."""
    picked: List[int] = []
    seen = set()
    for i, v in enumerate(videos):
        cat = getattr(v, 'category', None) or v.name
        if v.label == 1 and cat not in seen and len(picked) < num - 1:
            picked.append(i)
            seen.add(cat)
    normal = [i for i, v in enumerate(videos) if v.label == 0]
    if normal:
        picked.append(normal[0])
    for i in range(len(videos)):
        if len(picked) >= num:
            break
        if i not in picked:
            picked.append(i)
    return picked[:num]


def plot_scores(videos: Sequence[Video],
                scores: Mapping[str, Sequence[np.ndarray]], path: str,
                T: Optional[int] = 32, num_videos: int = 4) -> str:
    r"""Frame-level anomaly scores of a few test videos against their
    ground truth (shaded), one line per model. :obj:`scores` maps a model
    name to its segment scores per video (in the order of :obj:`videos`).
    Returns the path."""
    from pyg_lego.plot import _pyplot
    plt = _pyplot()
    chosen = pick_videos(videos, num_videos)
    fig, axes = plt.subplots(len(chosen), 1, sharey=True,
                             figsize=(8, 1.9 * len(chosen)), squeeze=False)
    for ax, i in zip(axes[:, 0], chosen):
        video = videos[i]
        if video.frame_labels is not None:
            gt = video.frame_labels.astype(float)
            ax.fill_between(np.arange(gt.size), 0, gt, step='post',
                            color='tab:red', alpha=0.15, linewidth=0,
                            label='ground truth')
        for name, per_video in scores.items():
            s = np.asarray(per_video[i], dtype=np.float64)
            if T is not None:
                s = segments_to_snippets(s, video.num_snippets)
            frames = snippets_to_frames(s, video.num_frames,
                                        video.frames_per_snippet)
            ax.plot(frames, linewidth=1.2, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(video.name, fontsize=9)
        ax.set_ylabel('score')
    axes[-1, 0].set_xlabel('frame')
    axes[0, 0].legend(fontsize=7, loc='upper right', ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
