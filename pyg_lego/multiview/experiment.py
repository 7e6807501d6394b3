r"""The transductive semi-supervised runner: a few labelled nodes per class,
a validation split on which every method is tuned with the same budget, the
rest to predict; mean and standard deviation over seeds."""
import itertools
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from pyg_lego.data import RelationData, build_relation_graph
from pyg_lego.diagnostics import graph_quality
from pyg_lego.multiview.baselines import (KINDS, GNN, Graph,
                                          SemanticAttentionGNN, given_graph,
                                          knn_graph, label_propagation,
                                          mean_normalized_adjacency,
                                          union_graph)
from pyg_lego.multiview.datasets import MultiViewData
from pyg_lego.multiview.lego_classifier import LEGOClassifier, expand
from pyg_lego.multiview.snf import snf
from pyg_lego.nn.fusion import GEOMETRIC_EPS
from pyg_lego.nn.sparsify import drop_zero_edges, topk_mask

#: The hyper-parameter grid every trained method draws its configurations
#: from.
DEFAULT_GRID: Dict[str, List[float]] = {
    'lr': [0.01, 0.03],
    'hidden_channels': [32, 64],
    'dropout': [0.3, 0.6],
    'weight_decay': [5e-4, 5e-3],
}
#: Label propagation's :math:`\alpha` values (as many as the configurations).
LP_ALPHAS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass
class Split:
    r"""Node indices of the labelled, validation and test nodes."""
    train: Tensor
    val: Tensor
    test: Tensor


def make_split(y: Tensor, per_class: int, val_per_class: int,
               seed: int) -> Split:
    r"""Draws :obj:`per_class` labelled and :obj:`val_per_class` validation
    nodes of every class; all other nodes are test nodes."""
    num_classes = int(y.max()) + 1
    counts = torch.bincount(y, minlength=num_classes)
    if int(counts.min()) < per_class + val_per_class + 1:
        raise ValueError(f"a class has only {int(counts.min())} nodes: not "
                         f"enough for {per_class} labelled + {val_per_class} "
                         f"validation nodes and a test node")
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in range(num_classes):
        members = (y == c).nonzero().view(-1)
        members = members[torch.randperm(members.numel(), generator=gen)]
        train.append(members[:per_class])
        val.append(members[per_class:per_class + val_per_class])
    train, val = torch.cat(train).sort()[0], torch.cat(val).sort()[0]
    rest = torch.ones_like(y, dtype=torch.bool)
    rest[train] = rest[val] = False
    return Split(train, val, rest.nonzero().view(-1))


def sample_configs(grid: Mapping[str, Sequence[float]], budget: int,
                   seed: int = 0) -> List[Dict[str, float]]:
    r"""The same :obj:`budget` configurations of :obj:`grid` (drawn without
    replacement with :obj:`seed`) for every method: equal tuning budgets."""
    keys = list(grid)
    full = [dict(zip(keys, vals))
            for vals in itertools.product(*(grid[k] for k in keys))]
    if budget >= len(full):
        return full
    return random.Random(seed).sample(full, budget)


@dataclass
class Method:
    r"""One row of the comparison.

    Args:
        name (str): Row label.
        family (str): :obj:`"gnn"` (includes :obj:`"mlp"` as head),
            :obj:`"lp"`, :obj:`"lego"` or :obj:`"attention"` (the
            :class:`~pyg_lego.multiview.baselines.SemanticAttentionGNN` over
            the views' graphs).
        head (str): A :class:`~pyg_lego.multiview.baselines.GNN` kind.
        graph (str): :obj:`"best_view"` (the view whose kNN or given graph
            label propagation finds best on the validation nodes),
            :obj:`"concat"` (kNN over all features concatenated, united with
            the given graphs), :obj:`"mean"` (mean of the views' normalised
            adjacencies), :obj:`"snf"` (Similarity Network Fusion of the
            :obj:`"snf"` scores on the shared pattern, each node's
            :obj:`topk` heaviest edges kept), :obj:`"fused_mean"` (the mean
            of the views' :obj:`score_map` scores, their geometric mean
            with :obj:`fusion="geometric"`, sparsified with
            :obj:`topk`: LEGO's fixed fusion as a plain graph) or
            :obj:`"view:<name>"`.
        mode (str): LEGO expansion mode.
        fusion (str): LEGO fusion kind (and the kind of mean of
            :obj:`"fused_mean"`).
        score_map (str): Score map of LEGO's relation graph (and of
            :obj:`"fused_mean"`).
        topk (int, optional): LEGO's sparsification (and that of the
            :obj:`"snf"` and :obj:`"fused_mean"` graphs); :obj:`None` keeps
            the whole pattern.
        learn (bool): Whether LEGO learns its fusion (:obj:`False`: fixed
            equal view weights on order 1).
    """
    name: str
    family: str
    head: str = 'gcn'
    graph: str = 'concat'
    mode: str = 'masked'
    fusion: str = 'linear'
    score_map: str = 'affine'
    topk: Optional[int] = None
    learn: bool = True


def default_methods(heads: Sequence[str] = ('gcn', 'gat', 'sgc', 'appnp',
                                            'tag', 'mixhop'),
                    lego_heads: Sequence[str] = ('gcn', ),
                    modes: Sequence[str] = ('elementwise', 'masked',
                                            'propagated'),
                    fusions: Sequence[str] = ('linear', 'polynomial'),
                    mean_heads: Sequence[str] = ('gcn', )) -> List[Method]:
    r"""MLP, label propagation and every head on the best view's graph and
    on the concatenated-feature graph, the mean-adjacency baseline, and
    LEGO for every expansion mode and fusion kind."""
    methods = [Method('MLP (concat features)', 'gnn', 'mlp')]
    for graph, label in (('best_view', 'best view'), ('concat', 'concat')):
        methods.append(Method(f'LabelProp ({label})', 'lp', graph=graph))
        methods += [Method(f'{_HEAD_NAMES[h]} ({label})', 'gnn', h, graph)
                    for h in heads]
    methods += [Method(f'{_HEAD_NAMES[h]} (mean adjacency)', 'gnn', h, 'mean')
                for h in mean_heads]
    methods += [Method(f'LEGO {mode}/{fusion} + {_HEAD_NAMES[h]}', 'lego', h,
                       mode=mode, fusion=fusion)
                for h in lego_heads for mode in modes for fusion in fusions]
    return methods


_HEAD_NAMES = {'mlp': 'MLP', 'gcn': 'GCN', 'gat': 'GAT', 'sgc': 'SGC',
               'appnp': 'APPNP', 'tag': 'TAGConv', 'mixhop': 'MixHop'}


class Context:
    r"""Everything the methods share on one data set: node features, the
    baseline graphs, LEGO's relation graph and its (parameter-free)
    expansions, built once and cached.

    Args:
        data (MultiViewData): The data set.
        k (int, optional): Neighbours of every kNN graph. (default: :obj:`10`)
        P (int, optional): LEGO's highest order. (default: :obj:`2`)
    """

    def __init__(self, data: MultiViewData, k: int = 10, P: int = 2):
        self.data, self.k, self.P = data, k, P
        self.x = data.node_features()
        n = data.num_nodes
        self.view_graphs: Dict[str, Graph] = {
            name: (given_graph(v, n) if name in data.graph_views
                   else knn_graph(v, k))
            for name, v in data.views.items()
        }
        concat = [knn_graph(self.x, k)] + [self.view_graphs[g]
                                            for g in data.graph_views]
        self.graphs: Dict[str, Graph] = {
            'concat': union_graph(concat, n) if len(concat) > 1 else concat[0],
            'mean': mean_normalized_adjacency(list(self.view_graphs.values()),
                                              n),
        }
        self._relations: Dict[str, RelationData] = {}
        self._powers: Dict[Tuple[str, str], Tensor] = {}
        self._fused: Dict[Tuple[str, str, Optional[int]], Graph] = {}

    @property
    def relation(self) -> RelationData:
        r"""LEGO's relation graph with the affine score map."""
        return self.relation_graph('affine')

    def relation_graph(self, score_map: str) -> RelationData:
        if score_map not in self._relations:
            self._relations[score_map] = build_relation_graph(
                self.data.views, k=self.k, score_map=score_map)
        return self._relations[score_map]

    def powers(self, mode: str, score_map: str = 'affine') -> Tensor:
        key = (score_map, mode)
        if key not in self._powers:
            self._powers[key] = expand(self.relation_graph(score_map),
                                       self.P, mode)
        return self._powers[key]

    def fused_graph(self, kind: str, score_map: str = 'affine',
                    topk: Optional[int] = None,
                    fusion: str = 'linear') -> Graph:
        r"""The parameter-free fused graphs: :obj:`"snf"` or
        :obj:`"fused_mean"` (see :class:`Method`; with
        :obj:`fusion="geometric"` the views' geometric mean), on the shared
        pattern without the edges :obj:`topk` drops."""
        if fusion not in ('linear', 'geometric'):
            raise ValueError(f"a fixed fusion is 'linear' (the mean) or "
                             f"'geometric', got {fusion!r}")
        key = (kind, score_map if kind == 'fused_mean' else 'snf', topk,
               fusion if kind == 'fused_mean' else None)
        if key not in self._fused:
            rel = self.relation_graph(key[1])
            n = rel.num_nodes
            if kind == 'snf':
                w = snf(rel.edge_index, rel.edge_attr, n, k=self.k)
            elif fusion == 'geometric':
                w = (rel.edge_attr.clamp_min(0) + GEOMETRIC_EPS).log() \
                    .mean(dim=1).exp()
            else:
                w = rel.edge_attr.clamp_min(0).mean(dim=1)
            if topk is not None:
                w = w * topk_mask(rel.edge_index, w, topk, n).to(w.dtype)
            self._fused[key] = Graph(*drop_zero_edges(rel.edge_index, w))
        return self._fused[key]

    def best_view(self, split: Split) -> str:
        r"""The view whose graph label propagation (:math:`\alpha = 0.9`)
        finds best on the validation nodes; uses no test label."""
        scores = {
            name: _accuracy(label_propagation(self.data.y, split.train, g),
                            self.data.y, split.val)
            for name, g in self.view_graphs.items()
        }
        return max(scores, key=scores.get)

    def graph(self, key: str, split: Split, score_map: str = 'affine',
              topk: Optional[int] = None, fusion: str = 'linear') -> Graph:
        if key in ('snf', 'fused_mean'):
            return self.fused_graph(key, score_map, topk, fusion)
        if key == 'best_view':
            return self.view_graphs[self.best_view(split)]
        if key.startswith('view:'):
            name = key[len('view:'):]
            if name not in self.view_graphs:
                raise ValueError(f"unknown view '{name}'; views: "
                                 f"{list(self.view_graphs)}")
            return self.view_graphs[name]
        if key not in self.graphs:
            raise ValueError(f"unknown graph '{key}'; use 'best_view', "
                             f"'concat', 'mean', 'snf', 'fused_mean' or "
                             f"'view:<name>'")
        return self.graphs[key]


def _accuracy(scores: Tensor, y: Tensor, index: Tensor) -> float:
    return float((scores[index].argmax(-1) == y[index]).float().mean())


@dataclass
class Fit:
    r"""The outcome of one configuration: validation and test accuracy at
    the epoch of best validation accuracy, and the trained model."""
    val: float
    test: float
    config: Dict[str, float]
    model: Optional[torch.nn.Module] = None
    epochs: int = 0
    graph: Optional[Graph] = None


def train_node_classifier(model: torch.nn.Module,
                          forward: Callable[[], Tensor], y: Tensor,
                          split: Split, lr: float, weight_decay: float,
                          epochs: int = 200, patience: int = 30,
                          no_decay: Sequence[torch.nn.Parameter] = ()
                          ) -> Tuple[float, float, int]:
    r"""Full-batch training with Adam and early stopping on validation
    accuracy; returns validation and test accuracy at the best epoch and the
    number of epochs run. Parameters in :obj:`no_decay` (LEGO's fusion
    coefficients, whose scale the heads normalise away) get no weight
    decay."""
    skip = {id(p) for p in no_decay}
    groups = [{'params': [p for p in model.parameters() if id(p) not in skip],
               'weight_decay': weight_decay}]
    if skip:
        groups.append({'params': list(no_decay), 'weight_decay': 0.0})
    opt = torch.optim.Adam(groups, lr=lr)
    best_val, best_test, best_state, wait = -1.0, 0.0, None, 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward()[split.train],
                                                 y[split.train])
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            out = forward()
        val = _accuracy(out, y, split.val)
        if val > best_val:
            best_val, best_test, wait = val, _accuracy(out, y, split.test), 0
            best_state = {k: v.detach().clone()
                          for k, v in model.state_dict().items()}
        else:
            wait += 1
            if wait >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return best_val, best_test, epoch


def fit_method(method: Method, ctx: Context, split: Split,
               config: Mapping[str, float], epochs: int = 200,
               patience: int = 30, seed: int = 0) -> Fit:
    r"""Trains (or, for label propagation, runs) one method with one
    configuration on one split."""
    y = ctx.data.y
    if method.family == 'lp':
        g = ctx.graph(method.graph, split, method.score_map, method.topk,
                      method.fusion)
        out = label_propagation(y, split.train, g, alpha=config['alpha'])
        return Fit(_accuracy(out, y, split.val), _accuracy(out, y, split.test),
                   dict(config), graph=g)
    if method.head not in KINDS:
        raise ValueError(f"unknown head {method.head!r}; heads: {KINDS}")
    config = _trained_config(config)
    torch.manual_seed(seed)
    hidden = int(config['hidden_channels'])
    dropout = float(config['dropout'])
    out_channels = ctx.data.num_classes
    if method.family == 'gnn':
        g = ctx.graph(method.graph, split, method.score_map, method.topk,
                      method.fusion)
        model = GNN(method.head, ctx.x.size(1), hidden, out_channels, dropout,
                    weighted=g.edge_weight is not None)

        def forward():
            return model(ctx.x, g.edge_index, g.edge_weight)
        no_decay = ()
    elif method.family == 'lego':
        rel = ctx.relation_graph(method.score_map)
        model = LEGOClassifier(rel.view_names,
                               ctx.powers(method.mode, method.score_map),
                               method.head, ctx.x.size(1), hidden,
                               out_channels, fusion=method.fusion,
                               dropout=dropout, topk=method.topk,
                               learn=method.learn)
        edge_index = rel.edge_index

        def forward():
            return model(ctx.x, edge_index)
        no_decay = list(model.fusion.parameters())
    elif method.family == 'attention':
        graphs = list(ctx.view_graphs.values())
        model = SemanticAttentionGNN(len(graphs), ctx.x.size(1), hidden,
                                     out_channels, dropout)

        def forward():
            return model(ctx.x, graphs)
        no_decay = ()
    else:
        raise ValueError(f"unknown family {method.family!r}; use 'gnn', "
                         f"'lp', 'lego' or 'attention'")
    val, test, ran = train_node_classifier(
        model, forward, y, split, float(config['lr']),
        float(config['weight_decay']), epochs, patience, no_decay)
    if method.family == 'lego':
        with torch.no_grad():
            g = Graph(edge_index, model.fused_graph(edge_index, y.numel()))
    elif method.family == 'attention':
        g = None
    return Fit(val, test, dict(config), model, ran, g)


#: The keys of a trained method's configuration.
CONFIG_KEYS = ('lr', 'hidden_channels', 'dropout', 'weight_decay')


def _trained_config(config: Mapping[str, float]) -> Dict[str, float]:
    config = dict(config)
    if 'hidden' in config and 'hidden_channels' not in config:
        # Records written before the PyG name.
        config['hidden_channels'] = config.pop('hidden')
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"the configuration {config} lacks {missing}; a "
                         f"trained method needs {list(CONFIG_KEYS)}")
    return config


def lp_alphas(budget: int) -> List[float]:
    r""":obj:`budget` values of :obj:`LP_ALPHAS`, spread over its range."""
    n = len(LP_ALPHAS)
    if budget >= n:
        return list(LP_ALPHAS)
    if budget == 1:
        return [0.9]
    return [LP_ALPHAS[round(i * (n - 1) / (budget - 1))]
            for i in range(budget)]


def tune(method: Method, ctx: Context, split: Split,
         configs: Sequence[Mapping[str, float]], epochs: int = 200,
         patience: int = 30, seed: int = 0) -> Fit:
    r"""Every configuration on one split; the one of best validation
    accuracy wins (ties: the first). Label propagation tries as many
    :math:`\alpha` values as there are configurations."""
    if method.family == 'lp':
        configs = [{'alpha': a} for a in lp_alphas(len(configs))]
    best = None
    for config in configs:
        fit = fit_method(method, ctx, split, config, epochs, patience, seed)
        if best is None or fit.val > best.val:
            best = fit
    return best


def view_shares(table, mode: str) -> Dict[str, float]:
    r"""Each view's share of the absolute coefficients of a linear fusion
    (or the exponents of a geometric one). Orders
    :math:`p \geq 1` only in the element-wise and masked modes, whose order
    0 is the same identity for every view (so its split between views means
    nothing)."""
    values = table.values.abs()
    if mode != 'propagated':
        values = values[:, 1:]
    per_view = values.sum(dim=1)
    total = float(per_view.sum())
    return {name: float(v) / total if total > 0 else math.nan
            for name, v in zip(table.rows, per_view)}


@dataclass
class Record:
    method: str
    per_class: int
    seed: int
    val: float
    test: float
    config: Dict[str, float]
    seconds: float
    coefficients: Optional[Dict[str, Dict[str, float]]] = None
    shares: Optional[Dict[str, float]] = None
    quality: Optional[Dict[str, float]] = None


def run_benchmark(data: MultiViewData, methods: Sequence[Method],
                  label_rates: Sequence[int] = (2, 5, 10),
                  seeds: Sequence[int] = (0, 1, 2, 3, 4),
                  val_per_class: int = 10, budget: int = 4,
                  grid: Mapping[str, Sequence[float]] = DEFAULT_GRID,
                  k: int = 10, P: int = 2, epochs: int = 200,
                  patience: int = 30, progress: bool = True,
                  ctx: Optional[Context] = None) -> List[Record]:
    r"""Runs every method at every label rate (labelled nodes per class) and
    seed, and returns one :class:`Record` per run.

    Protocol: every method tries the same :obj:`budget` configurations of
    :obj:`grid` on the split of the first seed and keeps the one of best
    validation accuracy; the other seeds (new labelled, validation and test
    nodes, new initialisation) reuse it. Every run stops early on its own
    validation accuracy and reports the test accuracy of that epoch."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if len(seeds) == 0 or len(label_rates) == 0:
        raise ValueError("need at least one seed and one label rate")
    ctx = ctx or Context(data, k=k, P=P)
    configs = sample_configs(grid, budget)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(label_rates) * len(methods), desc=data.name,
                   leave=False)
    records = []
    for per_class in label_rates:
        splits = [make_split(data.y, per_class, val_per_class, s)
                  for s in seeds]
        for method in methods:
            for i, (seed, split) in enumerate(zip(seeds, splits)):
                start = time.perf_counter()
                if i == 0:
                    fit = tune(method, ctx, split, configs, epochs, patience,
                               seed)
                    chosen = fit.config
                else:
                    fit = fit_method(method, ctx, split, chosen, epochs,
                                     patience, seed)
                records.append(_record(method, per_class, seed, fit,
                                       time.perf_counter() - start, data.y))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return records


def _record(method: Method, per_class: int, seed: int, fit: Fit,
            seconds: float, y: Tensor) -> Record:
    quality = None
    if fit.graph is not None and method.head != 'mlp':
        quality = graph_quality(fit.graph.edge_index, y,
                                fit.graph.edge_weight)
    rec = Record(method.name, per_class, seed, fit.val, fit.test, fit.config,
                 seconds, quality=quality)
    if isinstance(fit.model, LEGOClassifier):
        table = fit.model.coefficients()
        rec.coefficients = table.to_dict()
        if method.fusion == 'linear':
            rec.shares = view_shares(table, method.mode)
    return rec


def summarize(records: Sequence[Record]) -> Dict[str, Dict[int, Tuple[float,
                                                                      float]]]:
    r"""Method -> labelled nodes per class -> (mean, std) test accuracy over
    seeds (sample standard deviation; 0 for one seed)."""
    groups: Dict[str, Dict[int, List[float]]] = {}
    for r in records:
        groups.setdefault(r.method, {}).setdefault(r.per_class,
                                                   []).append(r.test)
    out = {}
    for method, rates in groups.items():
        out[method] = {}
        for rate, accs in rates.items():
            t = torch.tensor(accs)
            std = float(t.std()) if t.numel() > 1 else 0.0
            out[method][rate] = (float(t.mean()), std)
    return out


def mean_shares(records: Sequence[Record]
                ) -> Dict[str, Dict[int, Dict[str, float]]]:
    r"""Method -> rate -> view -> mean coefficient share over seeds (linear
    LEGO fusions only)."""
    acc: Dict[str, Dict[int, Dict[str, List[float]]]] = {}
    for r in records:
        if r.shares is None:
            continue
        per = acc.setdefault(r.method, {}).setdefault(r.per_class, {})
        for view, share in r.shares.items():
            per.setdefault(view, []).append(share)
    return {m: {rate: {v: sum(s) / len(s) for v, s in views.items()}
                for rate, views in rates.items()}
            for m, rates in acc.items()}


def to_markdown(summary: Mapping[str, Mapping[int, Tuple[float, float]]],
                digits: int = 1) -> str:
    r"""The summary as a markdown table of test accuracy (%), mean ± std;
    the best mean of every column in bold."""
    rates = sorted({r for v in summary.values() for r in v})
    best = {r: max(v[r][0] for v in summary.values() if r in v)
            for r in rates}
    lines = ['| method | ' + ' | '.join(f'{r} labels/class' for r in rates)
             + ' |', '|---' * (len(rates) + 1) + '|']
    for method, vals in summary.items():
        cells = []
        for r in rates:
            if r not in vals:
                cells.append('')
                continue
            mean, std = vals[r]
            cell = f'{100 * mean:.{digits}f} ± {100 * std:.{digits}f}'
            cells.append(f'**{cell}**' if mean == best[r] else cell)
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
