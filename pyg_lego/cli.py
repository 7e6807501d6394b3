r"""The :obj:`pyg-lego` command line.

``pyg-lego vad train`` / ``eval`` / ``demo``: weakly supervised video
anomaly detection on the embedded synthetic benchmark or on pre-extracted
feature folders in the public layout (UCF-Crime, XD-Violence,
ShanghaiTech). User errors (bad options, bad files) end with a one-line
message and exit code 2, before any output file is written.
"""
import argparse
import contextlib
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

DEMO_OUT = os.path.join('runs', 'demo')

#: Epochs of the demo's runs (chosen so that the whole demo takes minutes).
DEMO_EPOCHS = 30


class UserError(Exception):
    r"""A problem with the command's options or input files."""


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    r"""Reports what goes wrong while options and input files are read as
    a user error (no traceback); errors after that are bugs and keep theirs."""
    try:
        yield
    except (ValueError, KeyError, OSError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise UserError(str(message)) from e


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer, got {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _segments(text: str) -> Optional[int]:
    if text == 'full':
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of segments or 'full', got {text!r}")
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def _crops(text: str):
    if text in ('mean', 'all'):
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected 'mean', 'all' or a crop index, got {text!r}")
    return value


def _names(text: str) -> List[str]:
    names = [t.strip() for t in text.split(',') if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('data')
    g.add_argument('--data', default='synthetic',
                   help="'synthetic' (embedded benchmark) or a feature root "
                        "with one sub-folder of <video>.npy per view")
    g.add_argument('--views', type=_names,
                   help='comma-separated views (default: all)')
    g.add_argument('--train-list', help='list file of training videos')
    g.add_argument('--test-list', help='list file of test videos')
    g.add_argument('--ground-truth',
                   help='test ground truth: Temporal_Anomaly_Annotation.txt '
                        '(UCF-Crime), annotations.txt (XD-Violence), a '
                        'folder of <video>.npy frame labels or one '
                        'concatenated frame-label .npy')
    g.add_argument('--crops', type=_crops, default='mean',
                   help="ten-crop features: 'mean', 'all' or a crop index "
                        "(default: mean)")
    g.add_argument('--crop-axis', type=int, choices=(0, 1), default=0,
                   help='axis of crops in single-file arrays: 0 for '
                        '[crops, T, D], 1 for [T, crops, D]')
    g.add_argument('--crop-sep', choices=('__', '_'), default='__',
                   help='separator before the crop number in per-crop '
                        'file names')
    g.add_argument('--name-suffix', default='',
                   help="what feature file names add after the video name, "
                        "e.g. '_i3d'")
    g.add_argument('--num-train', type=_positive_int, default=200,
                   help='synthetic training videos (default: 200)')
    g.add_argument('--num-test', type=_positive_int, default=100,
                   help='synthetic test videos (default: 100)')
    g.add_argument('--data-seed', type=_non_negative_int, default=0,
                   help='seed of the synthetic data (default: 0)')
    g.add_argument('--T', type=_segments, default=32,
                   help="segments per video, or 'full' (default: 32)")
    g.add_argument('-k', type=_positive_int, default=8,
                   help='kNN neighbours at full length (default: 8)')


def _add_model(p: argparse.ArgumentParser, default_epochs: int) -> None:
    g = p.add_argument_group('model and training')
    g.add_argument('--fusion', choices=('linear', 'polynomial', 'geometric'),
                   default='linear', help='LEGO fusion kind (default: linear)')
    g.add_argument('--mode', choices=('elementwise', 'masked', 'propagated'),
                   default='elementwise',
                   help='LEGO expansion mode (default: elementwise)')
    g.add_argument('-P', type=_non_negative_int, default=2,
                   help='highest order of the expansion (default: 2)')
    g.add_argument('--channels', type=_positive_int, default=1,
                   help='fused graphs C (default: 1)')
    g.add_argument('--readout', choices=('deviation', 'rows'),
                   default='deviation',
                   help="how LEGO's head reads each snippet's row of the "
                        "fused graph: its sorted deviations from the video's "
                        "typical relations, or the paper's rows in snippet "
                        "order (default: deviation)")
    g.add_argument('--loss', choices=('topk', 'ranking'), default='topk',
                   help='top-k MIL BCE or the ranking loss of Sultani et al.')
    g.add_argument('--degree-weight', type=float, default=0.0,
                   help='weight of the degree-variance regulariser (LEGO; '
                        'default: 0, off)')
    g.add_argument('--degree-alpha', type=float, default=0.5,
                   help='edge threshold of the regulariser (default: 0.5)')
    g.add_argument('--epochs', type=_positive_int, default=default_epochs,
                   help=f'epochs (default: {default_epochs})')
    g.add_argument('--batch-size', type=_positive_int, default=32)
    g.add_argument('--lr', type=_positive_float, default=1e-3)
    g.add_argument('--device', default='cpu', help="e.g. 'cpu', 'cuda'")
    _add_threads(g)
    g.add_argument('--quiet', action='store_true',
                   help='no progress bars')


def _add_threads(g) -> None:
    g.add_argument('--threads', type=_positive_int, default=1,
                   help='CPU threads of torch (default: 1; the per-video '
                        'models are small, and one thread is the fastest '
                        'on a shared machine)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pyg-lego',
        description='LEGO multi-modal fusion for PyTorch Geometric.')
    tasks = parser.add_subparsers(dest='task', metavar='TASK', required=True)
    vad = tasks.add_parser(
        'vad', help='weakly supervised video anomaly detection',
        description='Weakly supervised video anomaly detection with LEGO '
                    'fusion and the usual fusion baselines.')
    cmds = vad.add_subparsers(dest='command', metavar='COMMAND',
                              required=True)

    train = cmds.add_parser('train', help='train one model and evaluate it')
    _add_data(train)
    _add_model(train, default_epochs=30)
    train.add_argument('--model', default='lego',
                       help="'lego', 'lego+features', 'single:<view>', "
                            "'concat', 'sum', 'attention' or 'gcn'")
    train.add_argument('--seed', type=_non_negative_int, default=0)
    train.add_argument('--out', default=os.path.join('runs', 'vad'),
                       help='output folder (default: runs/vad)')
    train.add_argument('--resume', action='store_true',
                       help='continue from OUT/checkpoint.pt')

    ev = cmds.add_parser('eval', help='evaluate a checkpoint')
    _add_data(ev)
    ev.add_argument('--checkpoint', required=True,
                    help='checkpoint.pt written by train')
    ev.add_argument('--out', help="output folder (default: the checkpoint's)")
    ev.add_argument('--device', default='cpu')
    _add_threads(ev)

    demo = cmds.add_parser(
        'demo', help='LEGO against every baseline on the synthetic '
                     'benchmark, several seeds')
    _add_model(demo, default_epochs=DEMO_EPOCHS)
    demo.add_argument('--models', type=_names,
                      help='comma-separated models (default: all)')
    demo.add_argument('--seeds', type=_positive_int, default=5,
                      help='seeds per model (default: 5)')
    demo.add_argument('--num-train', type=_positive_int, default=200)
    demo.add_argument('--num-test', type=_positive_int, default=100)
    demo.add_argument('--data-seed', type=_non_negative_int, default=0)
    demo.add_argument('--T', type=_segments, default=32)
    demo.add_argument('--out', default=DEMO_OUT,
                      help=f'output folder (default: {DEMO_OUT})')
    return parser


def _load_data(args, need_train: bool) -> Tuple[list, list]:
    from pyg_lego.vad.data import FeatureFolder
    from pyg_lego.vad.synthetic import make_synthetic
    if args.data == 'synthetic':
        train, test = make_synthetic(args.num_train if need_train else 0,
                                     args.num_test, seed=args.data_seed)
    else:
        if need_train and not args.train_list:
            raise UserError('--train-list is required with a feature folder')
        if not args.test_list:
            raise UserError('--test-list is required with a feature folder')
        if not args.ground_truth:
            raise UserError('--ground-truth is required with a feature '
                            'folder (frame-level metrics need it)')
        folder = FeatureFolder(args.data, views=args.views, crops=args.crops,
                               crop_axis=args.crop_axis,
                               crop_sep=args.crop_sep,
                               name_suffix=args.name_suffix)
        train = folder.load(args.train_list, progress=not getattr(
            args, 'quiet', False)) if need_train else []
        test = folder.load(args.test_list, args.ground_truth,
                           progress=not getattr(args, 'quiet', False))
    return train, test


def _views(videos: list, wanted: Optional[Sequence[str]]) -> List[str]:
    have = list(videos[0].views)
    if wanted is None:
        return have
    missing = [v for v in wanted if v not in have]
    if missing:
        raise UserError(f"unknown view(s) {missing}; the data has {have}")
    return list(wanted)


def _config(args, model: str, views: List[str], dims: Dict[str, int],
            seed: int, demo: bool = False):
    from pyg_lego.vad.train import TrainConfig
    # The demo applies the regulariser to the models that have a fused graph.
    degree = 0.0 if demo and not model.startswith('lego') else \
        args.degree_weight
    return TrainConfig(
        model=model, views=views, dims=dims, T=args.T, P=args.P,
        mode=args.mode, fusion=args.fusion, channels=args.channels,
        readout=args.readout, loss=args.loss, degree_weight=degree,
        degree_alpha=args.degree_alpha, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=seed,
        device=args.device)


def _check_model(name: str, views: List[str], T: Optional[int]) -> None:
    from pyg_lego.vad.models import MODEL_NAMES
    kind, _, arg = name.partition(':')
    if kind not in MODEL_NAMES or (kind == 'single') != bool(arg):
        raise UserError(f"unknown model {name!r}; choose 'lego', "
                        f"'lego+features', 'single:<view>', 'concat', 'sum', "
                        f"'attention' or 'gcn'")
    if kind == 'single' and arg not in views:
        raise UserError(f"model {name!r}: no view {arg!r}; views are {views}")
    if kind.startswith('lego') and T is None:
        raise UserError(f"model {name!r} needs a fixed --T (its graph-space "
                        f"head has one input per segment)")


def _check_device(device: str) -> None:
    import torch
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"bad --device {device!r}: {e}")
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here")


def _figures(out: str, videos, scores: Dict[str, list], T,
             models: Dict[str, Any]) -> Dict[str, str]:
    from pyg_lego.plot import plot_coefficients
    from pyg_lego.vad.models import LEGOVAD
    from pyg_lego.vad.report import plot_scores
    paths = {'scores': plot_scores(videos, scores,
                                   os.path.join(out, 'scores.png'), T)}
    for name, model in models.items():
        if isinstance(model, LEGOVAD):
            file = 'coefficients.png' if name == 'lego' else \
                f"coefficients_{name.replace('+', '_')}.png"
            paths[f'coefficients {name}'] = plot_coefficients(
                model.coefficients(), os.path.join(out, file),
                title=f'{name}: learned fusion coefficients')
    return paths


def _datasets(train, test, views, T, k):
    from pyg_lego.vad.video import VideoGraphDataset
    train_set = VideoGraphDataset(train, T=T, k=k, view_names=views) \
        if train else None
    test_set = VideoGraphDataset(test, T=T, k=k, view_names=views)
    return train_set, test_set


def _build_graphs(*datasets) -> None:
    r"""Builds every graph up front, so that bad features fail before
    training starts."""
    for ds in datasets:
        for i in range(len(ds)):
            ds[i]


def _check_resume(checkpoint: str, config) -> None:
    from dataclasses import asdict

    from pyg_lego.vad.train import TrainConfig, load_checkpoint
    saved = load_checkpoint(checkpoint)
    if saved['epoch'] >= config.epochs:
        raise UserError(f"the checkpoint has {saved['epoch']} epochs "
                        f"already; ask for more with --epochs")
    ours = asdict(config)
    theirs = asdict(TrainConfig.from_dict(saved['config']))
    diff = sorted(k for k, v in theirs.items()
                  if k not in ('epochs', 'device') and ours.get(k) != v)
    if diff:
        raise UserError(f"--resume: the checkpoint was made with other "
                        f"options ({', '.join(diff)} differ)")


def cmd_train(args) -> Dict[str, Any]:
    from pyg_lego.vad.report import results_markdown
    from pyg_lego.vad.train import CHECKPOINT, evaluate, train, write_results
    _check_device(args.device)
    checkpoint = os.path.join(args.out, CHECKPOINT)
    if args.resume and not os.path.isfile(checkpoint):
        raise UserError(f"--resume: no checkpoint at {checkpoint}")
    with _user_errors():
        train_videos, test_videos = _load_data(args, need_train=True)
        views = _views(train_videos, args.views)
        _check_model(args.model, views, args.T)
        dims = {v: int(train_videos[0].views[v].shape[1]) for v in views}
        config = _config(args, args.model, views, dims, args.seed)
        train_set, test_set = _datasets(train_videos, test_videos, views,
                                        args.T, args.k)
        _build_graphs(train_set, test_set)
        if args.resume:
            _check_resume(checkpoint, config)
    start = time.perf_counter()
    run = train(config, train_set, checkpoint=checkpoint, resume=args.resume,
                progress=not args.quiet)
    seconds = time.perf_counter() - start
    metrics = evaluate(run['model'], test_set, device=args.device)
    row = {'model': args.model, 'auc': metrics['auc'], 'ap': metrics['ap']}
    from dataclasses import asdict
    results = dict(row, config=asdict(config), history=run['history'],
                   train_seconds=seconds, data=args.data,
                   test_videos=len(test_videos))
    markdown = results_markdown([row], f'{args.model} on {args.data}')
    paths = write_results(args.out, results, markdown)
    paths.update(_figures(args.out, test_videos,
                          {args.model: metrics['scores']}, args.T,
                          {args.model: run['model']}))
    print(markdown)
    for what, path in paths.items():
        print(f'{what}: {path}')
    return results


def cmd_eval(args) -> Dict[str, Any]:
    from pyg_lego.vad.report import results_markdown
    from pyg_lego.vad.train import (TrainConfig, evaluate, load_checkpoint,
                                    model_from_checkpoint, write_results)
    _check_device(args.device)
    with _user_errors():
        state = load_checkpoint(args.checkpoint)
        config = TrainConfig.from_dict(state['config'])
        _, test_videos = _load_data(args, need_train=False)
        views = _views(test_videos, config.views)
        dims = {v: int(test_videos[0].views[v].shape[1]) for v in views}
        if dims != config.dims:
            raise UserError(f"the data's feature widths {dims} differ from "
                            f"the checkpoint's {config.dims}")
        _, test_set = _datasets(None, test_videos, views, config.T, args.k)
        _build_graphs(test_set)
        model = model_from_checkpoint(state).to(args.device)
    metrics = evaluate(model, test_set, device=args.device)
    row = {'model': config.model, 'auc': metrics['auc'], 'ap': metrics['ap']}
    results = dict(row, config=state['config'], epoch=state['epoch'],
                   checkpoint=args.checkpoint, data=args.data,
                   test_videos=len(test_videos))
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    markdown = results_markdown([row], f'{config.model} on {args.data}')
    paths = write_results(out, results, markdown)
    paths.update(_figures(out, test_videos, {config.model: metrics['scores']},
                          config.T, {config.model: model}))
    print(markdown)
    for what, path in paths.items():
        print(f'{what}: {path}')
    return results


def cmd_demo(args) -> Dict[str, Any]:
    from dataclasses import asdict

    from tqdm.auto import tqdm

    from pyg_lego.vad.models import model_names
    from pyg_lego.vad.report import results_markdown, summarize
    from pyg_lego.vad.synthetic import make_synthetic
    from pyg_lego.vad.train import evaluate, train, write_results
    _check_device(args.device)
    begin = time.perf_counter()
    with _user_errors():
        train_videos, test_videos = make_synthetic(
            args.num_train, args.num_test, seed=args.data_seed)
        views = list(train_videos[0].views)
        models = args.models or model_names(views)
        for name in models:
            _check_model(name, views, args.T)
        dims = {v: int(train_videos[0].views[v].shape[1]) for v in views}
        for name in models:
            _config(args, name, views, dims, 0, demo=True)
        train_set, test_set = _datasets(train_videos, test_videos, views,
                                        args.T, 8)
        _build_graphs(train_set, test_set)
    per_seed: Dict[str, List[Dict[str, float]]] = {m: [] for m in models}
    first_scores: Dict[str, list] = {}
    first_models: Dict[str, Any] = {}
    configs = {}
    jobs = [(m, s) for m in models for s in range(args.seeds)]
    bar = tqdm(jobs, desc='demo', unit='run', disable=args.quiet)
    for name, seed in bar:
        bar.set_postfix(model=name, seed=seed)
        config = _config(args, name, views, dims, seed, demo=True)
        configs[name] = asdict(config)
        start = time.perf_counter()
        run = train(config, train_set, progress=False)
        metrics = evaluate(run['model'], test_set, device=args.device)
        per_seed[name].append({'seed': seed, 'auc': metrics['auc'],
                               'ap': metrics['ap'],
                               'train_seconds': time.perf_counter() - start})
        if seed == 0:
            first_scores[name] = metrics['scores']
            first_models[name] = run['model']
    rows = summarize(per_seed)
    seconds = time.perf_counter() - begin
    title = (f'Synthetic benchmark ({args.num_train} train / {args.num_test} '
             f'test videos, views {", ".join(views)}; T={args.T}, '
             f'{args.epochs} epochs, {args.seeds} seeds)')
    markdown = results_markdown(rows, title)
    results = {'rows': rows, 'per_seed': per_seed, 'configs': configs,
               'views': views, 'num_train': args.num_train,
               'num_test': args.num_test, 'data_seed': args.data_seed,
               'seconds': seconds}
    paths = write_results(args.out, results, markdown)
    best = max((r for r in rows if not r['model'].startswith('lego')),
               key=lambda r: r['auc'], default=None)
    shown = [m for m in models if m.startswith('lego')]
    if best is not None:
        shown.append(best['model'])
    paths.update(_figures(args.out, test_videos,
                          {m: first_scores[m] for m in shown}, args.T,
                          {m: first_models[m] for m in shown}))
    print(markdown)
    print(f'{len(jobs)} runs in {seconds:.0f} s')
    for what, path in paths.items():
        print(f'{what}: {path}')
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {'train': cmd_train, 'eval': cmd_eval, 'demo': cmd_demo}
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        command[args.command](args)
    except UserError as e:
        parser.exit(2, f'{parser.prog} vad {args.command}: error: {e}\n')
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == '__main__':
    sys.exit(main())
