r"""Training and evaluation of snippet scorers under weak supervision:
seeded runs, checkpoints that resume exactly, frame-level AUC / AP, and
results written as JSON and markdown (the documentation's method page,
docs/method.rst, section 5)."""
import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from pyg_lego.vad.losses import (degree_variance_loss, ranking_loss,
                                 topk_mil_loss)
from pyg_lego.vad.metrics import frame_ap, frame_auc, frame_level_scores
from pyg_lego.vad.models import LEGOVAD, build_model
from pyg_lego.vad.video import VideoGraphDataset

LOSSES = ('topk', 'ranking')
CHECKPOINT = 'checkpoint.pt'


@dataclass
class TrainConfig:
    r"""Everything that defines a training run (saved in checkpoints and
    results).

    Args:
        model (str): A :func:`~pyg_lego.vad.models.build_model` name.
        views (list of str): The views the model uses.
        dims (dict): Feature width of every view.
        T (int, optional): Segments per video; :obj:`None` keeps full
            length (feature baselines only). (default: :obj:`32`)
        P, mode, fusion, channels, feature_channels, readout: LEGO's
            options (see :class:`~pyg_lego.vad.models.LEGOVAD`).
        hidden_channels (int, optional): Head width; :obj:`T` if
            :obj:`None`.
        dropout (float): Head dropout.
        loss (str): :obj:`"topk"` (top-:math:`k` MIL BCE) or
            :obj:`"ranking"` (Sultani et al.).
        topk (int, optional): :math:`k`; :math:`\lfloor T / 16 \rfloor + 1`
            if :obj:`None`.
        degree_weight, degree_alpha, degree_sign: The degree-variance
            regulariser (:func:`~pyg_lego.vad.losses.degree_variance_loss`,
            LEGO only); off when :obj:`degree_weight` is :obj:`0`.
        epochs, batch_size, lr, weight_decay: Adam training.
        seed (int): Seed of initialisation and shuffling.
        device (str): Torch device.
    """
    model: str = 'lego'
    views: List[str] = field(default_factory=list)
    dims: Dict[str, int] = field(default_factory=dict)
    T: Optional[int] = 32
    P: int = 2
    mode: str = 'elementwise'
    fusion: str = 'linear'
    channels: int = 1
    feature_channels: int = 0
    readout: str = 'deviation'
    hidden_channels: Optional[int] = None
    dropout: float = 0.0
    loss: str = 'topk'
    topk: Optional[int] = None
    degree_weight: float = 0.0
    degree_alpha: float = 0.5
    degree_sign: int = 1
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = 'cpu'

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got "
                             f"{self.loss!r}")
        for name in ('epochs', 'batch_size', 'T', 'P', 'channels',
                     'feature_channels'):
            low = 2 if name == 'T' else 1
            low = 0 if name in ('P', 'feature_channels') else low
            if getattr(self, name) is not None and \
                    int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got "
                                 f"{getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.degree_weight and not self.model.startswith('lego'):
            raise ValueError("the degree-variance regulariser needs a fused "
                             "graph: use it with model 'lego'")

    def model_options(self) -> Dict[str, Any]:
        if not self.model.startswith('lego'):
            return {}
        opts = dict(P=self.P, mode=self.mode, fusion=self.fusion,
                    channels=self.channels, readout=self.readout)
        if self.feature_channels:
            opts['feature_channels'] = self.feature_channels
        return opts

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'TrainConfig':
        # Configs saved before the PyG name kept the head width as 'hidden'.
        d = {('hidden_channels' if k == 'hidden' else k): v
             for k, v in d.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        # Configs saved before the readout option was added were trained
        # with the paper's rows: their weights fit that readout only.
        d.setdefault('readout', 'rows')
        return cls(**d)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_model(config: TrainConfig) -> torch.nn.Module:
    r"""The model a config describes, initialised from :obj:`config.seed`."""
    torch.manual_seed(config.seed)
    return build_model(config.model, config.views, config.dims, config.T,
                       hidden_channels=config.hidden_channels,
                       dropout=config.dropout,
                       **config.model_options())


def _loss(model: torch.nn.Module, batch, config: TrainConfig) -> torch.Tensor:
    if config.degree_weight and isinstance(model, LEGOVAD):
        logits, fused = model.forward_with_graph(batch)
    else:
        logits, fused = model(batch), None
    y = batch.y.view(-1)
    if config.loss == 'topk':
        loss = topk_mil_loss(logits, batch.batch, y, config.topk)
    else:
        loss = ranking_loss(logits, batch.batch, y)
    if fused is not None:
        loss = loss + degree_variance_loss(
            fused, batch.edge_index, logits, batch.batch, y,
            alpha=config.degree_alpha, weight=config.degree_weight,
            sign=config.degree_sign, k=config.topk)
    return loss


def _rng_state(generator: torch.Generator) -> Dict[str, Any]:
    return {'torch': torch.get_rng_state(), 'shuffle': generator.get_state(),
            'numpy': np.random.get_state(), 'python': random.getstate()}


def _set_rng_state(state: Dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state['torch'])
    generator.set_state(state['shuffle'])
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])


def save_checkpoint(path: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, epoch: int,
                    config: TrainConfig, generator: torch.Generator,
                    history: Sequence[float]) -> None:
    r"""Writes model, optimizer, finished epoch, config, loss history and
    every random state atomically (a crash never leaves half a file)."""
    state = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
             'epoch': epoch, 'config': asdict(config),
             'rng': _rng_state(generator), 'history': list(history)}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> Dict[str, Any]:
    r"""Reads a checkpoint written by :func:`save_checkpoint`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or not {'model', 'config', 'epoch'} <= \
            set(state):
        raise ValueError(f"{path} is not a pyg-lego VAD checkpoint")
    return state


def model_from_checkpoint(state: Dict[str, Any]) -> torch.nn.Module:
    config = TrainConfig.from_dict(state['config'])
    model = make_model(config)
    model.load_state_dict(state['model'])
    return model


def train(config: TrainConfig, train_set: VideoGraphDataset,
          checkpoint: Optional[str] = None, resume: bool = False,
          progress: bool = True) -> Dict[str, Any]:
    r"""Trains a snippet scorer with Adam on video labels only.

    Identical configs and data give identical weights on CPU. With
    :obj:`checkpoint`, the state is saved after every epoch; with
    :obj:`resume`, training continues from that file exactly where it
    stopped (same weights as an uninterrupted run), up to
    :obj:`config.epochs`.

    Returns:
        :obj:`{'model', 'history', 'epochs_run'}` (:obj:`history`: mean
        training loss per epoch).
    """
    from tqdm.auto import tqdm
    if train_set.view_names != list(config.views):
        raise ValueError(f"the data has views {train_set.view_names} but the "
                         f"config asks for {config.views}")
    if train_set.T != config.T:
        raise ValueError(f"the data has T={train_set.T} but the config has "
                         f"T={config.T}")
    labels = set(train_set.labels.tolist())
    if labels != {0, 1}:
        raise ValueError(f"training needs normal and anomalous videos, the "
                         f"training set has only label(s) {sorted(labels)}")
    device = torch.device(config.device)
    seed_everything(config.seed)
    model = make_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    start, history = 0, []
    if resume:
        if checkpoint is None:
            raise ValueError("resume needs a checkpoint path")
        state = load_checkpoint(checkpoint)
        saved = dict(asdict(TrainConfig.from_dict(state['config'])),
                     epochs=config.epochs, device=config.device)
        if saved != asdict(config):
            diff = sorted(k for k, v in asdict(config).items()
                          if saved.get(k) != v)
            raise ValueError(f"checkpoint {checkpoint} was made with another "
                             f"config (differs in {diff})")
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        _set_rng_state(state['rng'], generator)
        start, history = int(state['epoch']), list(state['history'])
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                        generator=generator)
    bar = tqdm(range(start, config.epochs), desc=f'train {config.model}',
               disable=not progress, leave=False, initial=start,
               total=config.epochs)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in loader:
            batch = batch.to(device)
            optimizer.zero_grad()
            loss = _loss(model, batch, config)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.num_graphs
            count += batch.num_graphs
        history.append(total / count)
        bar.set_postfix(loss=f'{history[-1]:.4f}')
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, epoch + 1, config,
                            generator, history)
    return {'model': model, 'history': history,
            'epochs_run': config.epochs - start}


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: VideoGraphDataset,
            batch_size: int = 64, device: str = 'cpu') -> List[np.ndarray]:
    r"""Snippet anomaly scores :math:`\sigma(\text{logit})` of every video of
    :obj:`dataset`, in its order (each :math:`(T,)`, or
    :math:`(T_{full},)` at full length)."""
    model.eval()
    out: List[np.ndarray] = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = batch.to(device)
        scores = torch.sigmoid(model(batch)).cpu().numpy()
        sizes = torch.bincount(batch.batch).cpu().tolist()
        out.extend(np.split(scores, np.cumsum(sizes)[:-1]))
    return out


def evaluate(model: torch.nn.Module, dataset: VideoGraphDataset,
             device: str = 'cpu') -> Dict[str, Any]:
    r"""Frame-level ROC AUC and AP over all test frames (snippet scores
    repeated to 16 frames each), and the segment scores per video."""
    scores = predict(model, dataset, device=device)
    frames, labels = frame_level_scores(dataset.videos, scores, dataset.T)
    return {'auc': frame_auc(frames, labels), 'ap': frame_ap(frames, labels),
            'scores': scores}


def write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_results(out_dir: str, results: Dict[str, Any],
                  markdown: str) -> Dict[str, str]:
    r"""Writes :obj:`results.json` and :obj:`results.md` into
    :obj:`out_dir`; returns their paths."""
    paths = {'json': os.path.join(out_dir, 'results.json'),
             'markdown': os.path.join(out_dir, 'results.md')}
    write_atomic(paths['json'], json.dumps(results, indent=2) + '\n')
    write_atomic(paths['markdown'], markdown)
    return paths


__all__ = ['TrainConfig', 'train', 'predict', 'evaluate', 'make_model',
           'save_checkpoint', 'load_checkpoint', 'model_from_checkpoint',
           'write_results']
