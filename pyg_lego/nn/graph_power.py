from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn.conv import MessagePassing

from pyg_lego.data.similarity import (CSRPattern, check_similarity,
                                      csr_pattern, csr_rowptr, default_gamma,
                                      edge_similarity, id_dtype, prepare,
                                      resolve_score_map)
from pyg_lego.data.calibration import ADAPTIVE_MAPS
from pyg_lego.data.validation import (all_finite, check_edge_index,
                                      check_order, edge_facts)
from pyg_lego.nn import locality, masked_numba
from pyg_lego.nn.locality import Relabel
from pyg_lego.nn.norm import relation_norm
from pyg_lego.nn.path_index import (DEFAULT_PATH_CHUNK, PathPlan,
                                    sort_by_closing, two_hop_paths)
from pyg_lego.nn.spmm import csr_matmul

MODES = ('elementwise', 'masked', 'propagated')
KERNELS = ('auto', 'torch', 'numba')

#: Default bytes the masked power may hold for its stored two-step paths.
DEFAULT_PATH_BUDGET = 2 * 2**30


class GraphPowerConv(MessagePassing):
    r"""Graph power expansion of the LEGO fusion operator from the
    "Learnable Expansion of Graph Operators for Multi-Modal Feature
    Fusion" paper (ICLR 2025), made
    sparse: orders :math:`p = 0, \ldots, P` of every view's relation graph
    :math:`\mathbf{R}_m`, all on the shared pattern :math:`\mathcal{E}`.

    **element-wise** (the paper's multilinear polynomial):

    .. math::
        \mathbf{R}^{(p)}_m = \mathbf{R}_m^{\odot p}, \qquad
        \mathbf{R}^{(0)}_m = \mathbf{I}

    **masked** matrix power (iterative relationship update), with
    :math:`\mathbf{A}_m = \mathbf{D}_m^{-1/2} \mathbf{R}_m
    \mathbf{D}_m^{-1/2}`:

    .. math::
        \mathbf{R}^{(0)}_m = \mathbf{I}, \quad
        \mathbf{R}^{(1)}_m = \mathbf{A}_m, \quad
        \mathbf{R}^{(p)}_m = \mathrm{mask}_{\mathcal{E}}\big(
        \mathbf{R}^{(p-1)}_m \mathbf{A}_m \big),

    a message passing over the two-step paths :math:`i \to l \to j` closed by
    an edge :math:`(i, j) \in \mathcal{E}`
    (see :func:`~pyg_lego.nn.two_hop_paths`); on the complete graph it is
    the dense matrix power :math:`\mathbf{A}_m^p`.

    **propagated** (SGC/SIGN-like), with :math:`\hat{\mathbf{X}}_m` the
    view's features as its similarity sees them (unit rows for cosine):

    .. math::
        \mathbf{Z}^{(p)}_m = \mathbf{A}_m^p \hat{\mathbf{X}}_m, \qquad
        \mathbf{R}^{(p)}_{m, ij} = \phi\big(\mathrm{sim}_m(
        \mathbf{Z}^{(p)}_{m, i}, \mathbf{Z}^{(p)}_{m, j})\big),

    so order :math:`0` is the view's own relation score.

    Identities live on :math:`\mathcal{E}`: they are :obj:`1` on its
    self-loops and vanish without them.

    Args:
        P (int): Highest order :math:`P`.
        mode (str, optional): :obj:`"elementwise"`, :obj:`"masked"` or
            :obj:`"propagated"`. (default: :obj:`"masked"`)
        order0 (str, optional): Element-wise order :math:`0`: :obj:`"self"`
            (:obj:`1` on self-loops) or :obj:`"all"` (:obj:`1` on every edge).
            (default: :obj:`"self"`)
        similarity (str, optional): Similarity of the propagated mode; must
            be the one the graph was built with. (default: :obj:`"cosine"`)
        score_map (str, optional): Score map of the propagated mode.
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth of the propagated mode.
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    **Speed and memory.** The keyword-only arguments below choose how the
    expansion is computed and how much memory that holds; the result is the
    same up to floating-point rounding (with :obj:`cached`, as long as the
    graph stays the same). The size thresholds that pick a path by
    themselves are listed, with their measurements, in
    ``docs/switches.md``.

    Keyword Args:
        cached (bool, optional): If :obj:`True`, the two-step-path index
            (masked mode) and the locality relabelling of the pattern
            (masked mode with the numba kernel, propagated mode, CPU) are
            built on the first call and reused: for transductive learning
            on one fixed graph.
            (default: :obj:`False`)
        chunk_size (int, optional): Candidate paths examined at once when the
            path index is built.
        memory_budget (int, optional): Bytes the masked power may spend on
            its two-step paths: the stored path index and what autograd
            saves per path. A pattern with more paths than fit is streamed
            instead: the paths are enumerated again, chunk by chunk, for
            every order of the forward and of the backward pass (a custom
            autograd function), so memory stays :math:`O(|\mathcal{E}| M P)`
            at the cost of recomputing the paths. In the propagated mode,
            the bytes its backward pass may keep (:math:`2P + 1` copies of
            every view's features); beyond them each view is recomputed in
            the backward pass (activation checkpointing), one view at a
            time. :obj:`None` always stores. (default: 2 GiB)
        kernel (str, optional): How the masked power runs on the CPU:
            :obj:`"numba"` (compiled passes of
            :mod:`pyg_lego.nn.masked_numba` over a path index where it fits
            :obj:`memory_budget`, 2 bytes per path where no node has more
            than 256 edges (else 4 or 8), and over the pattern itself,
            storing nothing, where it does not; needs the optional package
            numba), :obj:`"torch"` (sparse products over a stored path
            index, or streamed chunks beyond :obj:`memory_budget`; for
            float16/bfloat16 scores the sparse products run in float32) or
            :obj:`"auto"` (numba where it is installed, for float32/float64
            CPU tensors outside :func:`torch.compile`; torch otherwise, e.g.
            on CUDA). (default: :obj:`"auto"`)
        dense_blocks (bool, optional): If :obj:`True`, a pattern that is a
            union of complete graphs of equal size (e.g. a mini-batch of
            videos of :math:`T` snippets) takes the masked power as batched
            :math:`T \times T` products, which is faster than the path
            message passing and gives the same result; the blocks hold as
            many entries as the edges. (default: :obj:`True`)

    Shapes:
        - **input:**
          edge indices :math:`(2, |\mathcal{E}|)` (or a sparse
          :math:`(N, N, M)` tensor holding the scores),
          relation scores :math:`(|\mathcal{E}|, M)`,
          view features :math:`[(N, d_m)]_{m}` *(propagated mode)*
        - **output:** :math:`(|\mathcal{E}|, M, P + 1)`
    """

    _cached_paths: Optional[Tensor]

    def __init__(self, P: int, mode: str = 'masked', order0: str = 'self',
                 similarity: str = 'cosine', score_map: str = 'auto',
                 gamma: Optional[float] = None, *, cached: bool = False,
                 chunk_size: int = DEFAULT_PATH_CHUNK,
                 memory_budget: Optional[int] = DEFAULT_PATH_BUDGET,
                 kernel: str = 'auto', dense_blocks: bool = True, **kwargs):
        kwargs.setdefault('aggr', 'add')
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if order0 not in ('self', 'all'):
            raise ValueError(f"order0 must be 'self' or 'all', got {order0!r}")
        self.P = check_order(P)
        self.mode = mode
        self.order0 = order0
        self.similarity = check_similarity(similarity)
        self.score_map = resolve_score_map(score_map, similarity)
        if mode == 'propagated' and self.score_map in ADAPTIVE_MAPS:
            raise ValueError(f"the propagated mode scores propagated "
                             f"features edge by edge and cannot apply "
                             f"score_map={score_map!r}, whose bandwidths come "
                             f"from each node's kNN distances; use "
                             f"'elementwise' or 'masked'")
        self.gamma = gamma
        self.cached = cached
        self.chunk_size = chunk_size
        if memory_budget is not None and memory_budget < 0:
            raise ValueError(f"memory_budget must be >= 0 bytes or None, got "
                             f"{memory_budget}")
        self.memory_budget = memory_budget
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got "
                             f"{kernel!r}")
        if kernel == 'numba' and not masked_numba.available():
            raise ImportError("kernel='numba' needs the optional package "
                              "'numba': pip install 'pyg-lego[numba]'")
        self.kernel = kernel
        self.dense_blocks = dense_blocks
        self._cached_paths = None
        self._cached_numba = None
        self._cached_relabel = None

    def reset_parameters(self):
        super().reset_parameters()
        self._cached_paths = None
        self._cached_numba = None
        self._cached_relabel = None

    def forward(self, edge_index: Tensor, edge_attr: Optional[Tensor] = None,
                xs: Optional[Sequence[Optional[Tensor]]] = None,
                num_nodes: Optional[int] = None,
                path_index: Optional[Tensor] = None) -> Tensor:
        r"""Runs the expansion.

        Args:
            edge_index (torch.Tensor): The pattern :math:`(2, |\mathcal{E}|)`,
                or a sparse COO/CSR tensor :math:`(N, N, M)` (or
                :math:`(N, N)`) whose values are the scores; the output then
                follows its coalesced order.
            edge_attr (torch.Tensor, optional): Scores
                :math:`(|\mathcal{E}|, M)` or :math:`(|\mathcal{E}|,)`.
            xs (list of torch.Tensor, optional): Every view's features, in
                the order of the score columns (propagated mode only).
            num_nodes (int, optional): :math:`N`.
            path_index (torch.Tensor, optional): A precomputed
                :func:`~pyg_lego.nn.two_hop_paths` of the coalesced pattern.

        Under :func:`torch.compile` (no graph breaks), pass a coalesced
        :obj:`edge_index`, :obj:`num_nodes` and, for the masked mode,
        :obj:`path_index`; the compiled graph asserts the first instead of
        coalescing.
        """
        edge_index, edge_attr = self._unpack(edge_index, edge_attr)
        num_views = edge_attr.size(1)
        if self.mode == 'propagated':
            xs = self._check_xs(xs, num_views, num_nodes)
            num_nodes = xs[0].size(0)
        elif num_nodes is None and torch.compiler.is_compiling():
            num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
        elif num_nodes is None:
            num_nodes = edge_facts(edge_index)[1] + 1
        if torch.compiler.is_compiling():
            # Reading values would break the graph: a compiled forward checks
            # in-graph that the input is coalesced and in range instead.
            _assert_coalesced(edge_index, num_nodes)
            inverse = None
        else:
            # The values read here are read once per tensor (edge_facts,
            # all_finite): a graph used again reads none of them again.
            check_edge_index(edge_index, num_nodes)
            if not all_finite(edge_attr):
                raise ValueError("edge_attr (the relation scores) contains "
                                 "NaN or Inf")
            edge_index, edge_attr, inverse = _coalesce(edge_index, edge_attr,
                                                       num_nodes)
        if self.mode == 'elementwise':
            out = self._elementwise(edge_index, edge_attr)
        elif self.mode == 'masked':
            if inverse is not None:
                path_index = None  # A given path index refers to edge ids.
            out = self._masked(edge_index, edge_attr, num_nodes, path_index)
        else:
            out = self._propagated(edge_index, edge_attr, xs, num_nodes)
        return out if inverse is None else out[inverse]

    @staticmethod
    def _unpack(edge_index, edge_attr) -> Tuple[Tensor, Tensor]:
        if isinstance(edge_index, Tensor) and edge_index.is_sparse or \
                isinstance(edge_index, Tensor) and edge_index.layout in (
                    torch.sparse_csr, torch.sparse_csc):
            if edge_attr is not None:
                raise ValueError("pass the scores either as the values of the "
                                 "sparse tensor or as edge_attr, not both")
            adj = edge_index.to_sparse_coo().coalesce()
            edge_index, edge_attr = adj.indices(), adj.values()
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or \
                edge_index.size(0) != 2:
            raise ValueError("edge_index must have shape [2, |E|]")
        if edge_attr is None:
            raise ValueError("edge_attr (the relation scores [|E|, M]) is "
                             "required")
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.unsqueeze(-1)
        if edge_attr.dim() != 2 or edge_attr.size(0) != edge_index.size(1):
            raise ValueError(f"edge_attr must have shape [|E|, M] with "
                             f"|E| = {edge_index.size(1)}, got "
                             f"{list(edge_attr.shape)}")
        if not edge_attr.is_floating_point():
            raise TypeError("edge_attr must be floating point")
        if edge_index.dtype != torch.long:
            raise TypeError(f"edge_index has dtype {edge_index.dtype}; it "
                            f"must be torch.long")
        return edge_index, edge_attr

    def _check_xs(self, xs, num_views: int,
                  num_nodes: Optional[int]) -> List[Tensor]:
        if xs is None or len(xs) != num_views:
            raise ValueError(f"the propagated mode needs the features of all "
                             f"{num_views} views (xs), got "
                             f"{'none' if xs is None else len(xs)}")
        for m, x in enumerate(xs):
            if x is None:
                raise ValueError(f"view {m} is a given graph without "
                                 f"features; the propagated mode needs "
                                 f"features for every view (use "
                                 f"mode='masked' or 'elementwise')")
            if not x.is_floating_point():
                raise TypeError(f"view {m} has features of dtype {x.dtype}; "
                                f"they must be floating point")
            if x.dim() != 2 or x.size(0) != xs[0].size(0):
                raise ValueError(f"view {m} has features of shape "
                                 f"{list(x.shape)}; all views need [N, d_m] "
                                 f"with the same N")
        if num_nodes is not None and xs[0].size(0) != num_nodes:
            raise ValueError(f"num_nodes={num_nodes} but the features have "
                             f"{xs[0].size(0)} rows")
        return list(xs)

    def _identity(self, edge_index: Tensor, like: Tensor) -> Tensor:
        loop = (edge_index[0] == edge_index[1]).to(like.dtype).unsqueeze(-1)
        return loop.expand_as(like)

    def _elementwise(self, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        if self.order0 == 'all':
            first = torch.ones_like(edge_attr)
        else:
            first = self._identity(edge_index, edge_attr)
        orders = [first] + [edge_attr**p for p in range(1, self.P + 1)]
        return torch.stack(orders, dim=-1)

    def _paths(self, edge_index: Tensor, num_nodes: int,
               path_index: Optional[Tensor], a: Tensor) -> Optional[Tensor]:
        r"""The stored path index, or :obj:`None` if it would not fit the
        memory budget."""
        if path_index is not None:
            return path_index
        if self.cached and self._cached_paths is not None:
            return self._cached_paths
        max_paths = None
        if self.memory_budget is not None:
            # The index (3 ids), the gathered A, and one saved message per
            # order above 1.
            per_path = 3 * 8 + a.element_size() * a.size(1) * self.P
            max_paths = self.memory_budget // per_path
        paths = two_hop_paths(edge_index, num_nodes, self.chunk_size,
                              max_paths)
        if self.cached:
            self._cached_paths = paths
        return paths

    def _stream_plan(self, edge_index: Tensor, num_nodes: int,
                     a: Tensor) -> PathPlan:
        chunk = self.chunk_size
        if self.memory_budget is not None:
            # About 8 id tensors per candidate and 3 gathered rows per path.
            per_candidate = 8 * 8 + 3 * a.element_size() * a.size(1)
            # The floor keeps per-chunk overhead small; chunk_size caps it.
            chunk = min(chunk, max(1 << 16,
                                   self.memory_budget // per_candidate))
        return PathPlan(edge_index, num_nodes, chunk, compact=not a.is_cuda)

    def _use_numba(self, a: Tensor) -> bool:
        if self.kernel == 'torch' or torch.compiler.is_compiling():
            return False
        fits = a.device.type == 'cpu' and a.dtype in (torch.float32,
                                                       torch.float64)
        if self.kernel == 'numba' and not fits:
            raise ValueError(f"kernel='numba' runs on float32/float64 CPU "
                             f"tensors, got {a.dtype} on {a.device}; use "
                             f"kernel='auto' or 'torch'")
        return fits and masked_numba.available()

    def _numba_plan(self, edge_index: Tensor, num_nodes: int,
                    path_index: Optional[Tensor], needs_grad: bool):
        r"""The pattern the numba passes walk, and the paths they read where
        an index is given, or is cached, or fits :obj:`memory_budget`.

        Without a cache, the paths are stored only for a call that runs two
        passes or more (a backward pass, or :math:`P \geq 3`): the two walks
        that store them cost about one pass by walks (0.28 s against 0.27 s
        at N = 64,000, :class:`~pyg_lego.nn.masked_numba.StoredPaths`), and
        a pass over them a quarter of one (a one-off run). A pattern whose
        paths exceed the budget costs the enumeration's counting walk."""
        if self.cached and self._cached_numba is not None:
            return self._cached_numba
        # Relabelled only where the relabelling is built once and reused:
        # per call it costs more than it saves (RELABEL_MIN_EDGES).
        pattern = masked_numba.Pattern(
            edge_index, num_nodes, reorder=self.cached and
            edge_index.size(1) >= locality.RELABEL_MIN_EDGES)
        if path_index is not None:
            stored = masked_numba.StoredPaths.from_index(path_index, pattern)
        else:
            per_path = masked_numba.StoredPaths.bytes_per_path(pattern)
            max_paths = None if self.memory_budget is None else \
                self.memory_budget // per_path
            stored = None
            if self.cached or needs_grad or self.P >= 3:
                stored = masked_numba.StoredPaths.enumerate(pattern,
                                                            max_paths)
        if self.cached:
            self._cached_numba = (pattern, stored)
        return pattern, stored

    def _masked(self, edge_index: Tensor, edge_attr: Tensor, num_nodes: int,
                path_index: Optional[Tensor]) -> Tensor:
        orders = [self._identity(edge_index, edge_attr)]
        if self.P >= 1:
            a = relation_norm(edge_index, edge_attr, num_nodes)
            orders.append(a)
        block = complete_block_size(edge_index, num_nodes) \
            if self.dense_blocks and self.P >= 2 else None
        if block is not None:
            # [E, M] in (graph, i, j) order -> [B, M, T, T].
            dense_a = a.view(-1, block, block, a.size(1)).permute(0, 3, 1, 2)
            power = dense_a
            for _ in range(2, self.P + 1):
                power = power @ dense_a
                orders.append(power.permute(0, 2, 3, 1).reshape_as(a))
        elif self.P >= 2 and self._use_numba(a):
            pattern, stored = self._numba_plan(
                edge_index, num_nodes, path_index,
                torch.is_grad_enabled() and a.requires_grad)
            orders.extend(masked_numba.NumbaMaskedPower.apply(
                a, pattern, self.P, stored))
        elif self.P >= 2 and (paths := self._paths(
                edge_index, num_nodes, path_index, a)) is None:
            plan = self._stream_plan(edge_index, num_nodes, a)
            orders.extend(StreamedMaskedPower.apply(a, plan, self.P)
                          .unbind(-1))
        elif self.P >= 2 and torch.compiler.is_compiling():
            # Dynamo cannot build sparse tensors: a compiled graph takes the
            # gather-multiply-scatter over the paths, which it fuses.
            first, second, closing = paths[0], paths[1], paths[2]
            a_second = a[second]
            for _ in range(2, self.P + 1):
                orders.append(torch.zeros_like(a).index_add(
                    0, closing, orders[-1][first] * a_second))
        elif self.P >= 2:
            # Sparse products exist for float32/64 only (MKL's on the CPU):
            # half-precision scores are multiplied in float32, cast back.
            wide = a if a.dtype in (torch.float32, torch.float64) else \
                a.float()
            orders.extend(MaskedPower.apply(wide, sort_by_closing(paths),
                                            self.P).to(a.dtype).unbind(-1))
        return torch.stack(orders, dim=-1)

    def _propagated(self, edge_index: Tensor, edge_attr: Tensor,
                    xs: List[Tensor], num_nodes: int) -> Tensor:
        a = relation_norm(edge_index, edge_attr, num_nodes)
        recompute = self._recompute_views(xs, a)
        relabel = self._relabel(edge_index, num_nodes, xs)
        if relabel is not None:
            edge_index = relabel.edge_index
        # One CSR form (and transpose) for every product of every view; a
        # dtype without sparse kernels gathers and scatters instead.
        pattern = csr_pattern(edge_index[0], edge_index[1], num_nodes,
                              num_nodes, a.dtype)
        views = []
        for m, x in enumerate(xs):
            args = (x, a[:, m], edge_index, pattern, relabel)
            views.append(checkpoint(self._propagate_view, *args,
                                    use_reentrant=False) if recompute
                         else self._propagate_view(*args))
        return torch.stack(views, dim=1)

    def _relabel(self, edge_index: Tensor, num_nodes: int,
                 xs: List[Tensor]) -> Optional[Relabel]:
        r"""The locality relabelling the propagated mode runs on (CPU): its
        products and scores gather feature rows at random, 1.5x to 2.5x
        slower unrelabelled at 64,000 nodes (forward, the last two scale
        benchmark runs). Cached with :obj:`cached`, where it pays from
        :obj:`RELABEL_MIN_EDGES` edges on; for one call, where a view's
        features outgrow :obj:`RELABEL_MIN_FEATURE_BYTES` (see
        :mod:`~pyg_lego.nn.locality`). Views recomputed to stay within
        :obj:`memory_budget` are relabelled too: at N = 1M, the mode's
        forward and backward took 221 s against 364 s, for a peak of
        16.7 GB against 15.1 GB (the relabelled pattern and its maps, and
        per view a relabelled copy of the features and of their
        gradient)."""
        if edge_index.device.type != 'cpu' or \
                torch.compiler.is_compiling() or \
                edge_index.size(1) < locality.RELABEL_MIN_EDGES:
            return None
        if self.cached:
            if self._cached_relabel is None:
                self._cached_relabel = Relabel(edge_index, num_nodes)
            return self._cached_relabel
        if max(x.numel() * x.element_size() for x in xs) < \
                locality.RELABEL_MIN_FEATURE_BYTES:
            return None
        return Relabel(edge_index, num_nodes)

    def _recompute_views(self, xs: List[Tensor], a: Tensor) -> bool:
        r"""Whether the propagated views exceed :obj:`memory_budget` with
        what their backward pass keeps: per view the prepared features and,
        per order, the propagated and the normalised ones."""
        if self.memory_budget is None or not torch.is_grad_enabled() or \
                torch.compiler.is_compiling():
            return False
        if not (a.requires_grad or any(x.requires_grad for x in xs)):
            return False
        kept = sum((2 * self.P + 1) * x.numel() * x.element_size()
                   for x in xs)
        return kept > self.memory_budget

    def _propagate_view(self, x: Tensor, weight: Tensor, edge_index: Tensor,
                        pattern: Optional[CSRPattern],
                        relabel: Optional[Relabel]) -> Tensor:
        # Relabelled here, one view at a time and inside the checkpoint, so
        # that no relabelled copy of every view is kept at once.
        if relabel is not None:
            x, weight = relabel.nodes(x), relabel.edges(weight)
        weight = weight.contiguous()
        gamma = default_gamma(x, self.gamma)
        z = prepare(x, self.similarity)
        scores = [edge_similarity(z, edge_index, self.similarity,
                                  self.score_map, gamma, prepared=True,
                                  pattern=pattern)]
        for _ in range(self.P):
            # Z <- A Z: one CSR product with the pattern's cached transpose
            # for the backward pass, which PyG's generated propagate() has
            # no argument to pass; without CSR, a gather-scatter propagate.
            z = self.propagate(edge_index.flip(0), x=z,
                               weight=weight.unsqueeze(-1)) \
                if pattern is None else csr_matmul(pattern, z, weight)
            scores.append(edge_similarity(z, edge_index, self.similarity,
                                          self.score_map, gamma,
                                          pattern=pattern))
        scores = torch.stack(scores, dim=-1)
        return scores if relabel is None else relabel.input_edges(scores)

    def message(self, x_j: Tensor, weight: Tensor) -> Tensor:
        return weight * x_j

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(P={self.P}, mode={self.mode!r}, '
                f'similarity={self.similarity!r}, kernel={self.kernel!r})')


def complete_block_size(edge_index: Tensor, num_nodes: int) -> Optional[int]:
    r""":math:`T` if the coalesced :obj:`edge_index` is a disjoint union of
    complete graphs with self-loops on runs of :math:`T` consecutive nodes
    (how PyG batches equal-size complete graphs), else :obj:`None`."""
    num_edges = edge_index.size(1)
    if num_nodes == 0 or num_edges % num_nodes != 0:
        return None
    block = num_edges // num_nodes
    # No cap on T: the batched products beat the paths at every T measured
    # (3.0x at T = 64, 3.7x at T = 256, benchmarks/results/switches.md),
    # and hold as many entries as the edges.
    if num_nodes % block != 0:
        return None
    idx = torch.arange(num_edges, device=edge_index.device)
    row = idx // block
    col = (row // block) * block + idx % block
    if torch.equal(edge_index[0], row) and torch.equal(edge_index[1], col):
        return block
    return None


class MaskedPower(torch.autograd.Function):
    r"""Orders :math:`2..P` of the masked power of :math:`\mathbf{A}`
    (:math:`(|\mathcal{E}|, M)`) from a stored path index sorted by closing
    edge (as :func:`~pyg_lego.nn.two_hop_paths` returns it).

    Per view :math:`m`, the paths form a CSR matrix
    :math:`\mathbf{S}_m \in \mathbb{R}^{|\mathcal{E}| \times |\mathcal{E}|}`
    with :math:`\mathbf{S}_{m, (i, j), (i, l)} = \mathbf{A}_{lj, m}`, so
    every order is one sparse-dense product per view,
    :math:`\mathbf{r}^{(p)}_m = \mathbf{S}_m \mathbf{r}^{(p-1)}_m`; the
    weights differ between views, so the views cannot share one product.
    The backward pass is the gather-multiply-scatter of
    :class:`StreamedMaskedPower` over the stored paths. Returns
    :math:`(|\mathcal{E}|, M, P - 1)`.
    """

    @staticmethod
    def forward(ctx, a: Tensor, paths: Tensor, P: int) -> Tensor:
        first, second, closing = paths[0], paths[1], paths[2]
        num_edges = a.size(0)
        ids = id_dtype(num_edges, first.numel())
        rowptr = csr_rowptr(closing, num_edges, ids)
        col = first.to(ids)
        a_t = a.t().contiguous()
        mats = [torch.sparse_csr_tensor(rowptr, col, a_m[second],
                                        (num_edges, num_edges),
                                        device=a.device,
                                        check_invariants=False)
                for a_m in a_t]
        orders = [a_t]
        for _ in range(2, P + 1):
            orders.append(torch.stack([
                torch.sparse.mm(mat, r_m.unsqueeze(1)).squeeze(1)
                for mat, r_m in zip(mats, orders[-1])]))
        ctx.save_for_backward(paths, a, *(o.t().contiguous()
                                          for o in orders[1:-1]))
        return torch.stack(orders[1:], dim=-1).permute(1, 0, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        paths, *orders = ctx.saved_tensors  # orders 1 .. P-1
        first, second, closing = paths[0], paths[1], paths[2]
        a = orders[0]
        grad_a = torch.zeros_like(a)
        carry = None
        for p in range(grad.size(-1) + 1, 1, -1):
            g = grad[..., p - 2] if carry is None else grad[..., p - 2] + carry
            g_path = g[closing]
            carry = torch.zeros_like(a)
            carry.index_add_(0, first, g_path * a[second])
            grad_a.index_add_(0, second, g_path * orders[p - 2][first])
        return grad_a + carry, None, None


class StreamedMaskedPower(torch.autograd.Function):
    r"""Orders :math:`2..P` of the masked power of :math:`\mathbf{A}`
    (:math:`(|\mathcal{E}|, M)`, all views at once) without a stored path
    index: every pass enumerates the paths of a :class:`PathPlan` chunk by
    chunk.

    With :math:`\mathbf{G}^{(p)}` the gradient reaching order :math:`p`, the
    backward pass runs the orders downwards, one pass each:

    .. math::
        \mathbf{G}^{(p-1)}_{il} \mathrel{+}= \sum_{j} \mathbf{G}^{(p)}_{ij}
        \mathbf{A}_{lj}, \qquad
        \nabla \mathbf{A}_{lj} \mathrel{+}= \sum_{i} \mathbf{G}^{(p)}_{ij}
        \mathbf{R}^{(p-1)}_{il}

    over the paths :math:`i \to l \to j`; order :math:`1` is
    :math:`\mathbf{A}` itself. Only the orders are saved, never per-path
    tensors. Returns :math:`(|\mathcal{E}|, M, P - 1)`.
    """

    @staticmethod
    def forward(ctx, a: Tensor, plan: PathPlan, P: int) -> Tensor:
        orders = [a]
        for _ in range(2, P + 1):
            out = torch.zeros_like(a)
            for first, second, closing, hit in plan:
                msg = orders[-1][first] * a[second]
                if hit is not None:
                    msg = msg * hit.unsqueeze(-1)
                out.index_add_(0, closing, msg)
            orders.append(out)
        ctx.plan = plan
        ctx.save_for_backward(*orders[:-1])
        return torch.stack(orders[1:], dim=-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        orders = ctx.saved_tensors  # orders 1 .. P-1
        a = orders[0]
        grad_a = torch.zeros_like(a)
        carry = None
        for p in range(grad.size(-1) + 1, 1, -1):
            g = grad[..., p - 2] if carry is None else grad[..., p - 2] + carry
            prev = orders[p - 2]
            carry = torch.zeros_like(a)
            for first, second, closing, hit in ctx.plan:
                g_path = g[closing]
                if hit is not None:
                    g_path = g_path * hit.unsqueeze(-1)
                carry.index_add_(0, first, g_path * a[second])
                grad_a.index_add_(0, second, g_path * prev[first])
        return grad_a + carry, None, None


def _assert_coalesced(edge_index: Tensor, num_nodes: int) -> None:
    key = edge_index[0] * num_nodes + edge_index[1]
    torch._assert_async(((edge_index >= 0) & (edge_index < num_nodes)).all(),
                        "edge_index refers to nodes out of range")
    torch._assert_async((key[1:] > key[:-1]).all(),
                        "under torch.compile, edge_index must be coalesced "
                        "(sorted by row, then column, no duplicates)")


def _coalesce(edge_index: Tensor, edge_attr: Tensor, num_nodes: int):
    r"""Sorts and merges duplicate edges (summing their scores, as
    :func:`torch_geometric.utils.coalesce` does). Returns the inverse map to
    the input order, or :obj:`None` if the input was coalesced already."""
    # torch_geometric.utils.coalesce returns no inverse map; with a
    # searchsorted for it, it took 2.83x the time at 4.1M edges
    # (benchmarks/results/library_replacements.md).
    if edge_facts(edge_index)[2]:
        return edge_index, edge_attr, None
    key = edge_index[0] * num_nodes + edge_index[1]
    uniq, inverse = torch.unique(key, return_inverse=True)
    merged = edge_attr.new_zeros(uniq.numel(), edge_attr.size(1))
    merged = merged.index_add(0, inverse, edge_attr)
    return torch.stack([uniq // num_nodes, uniq % num_nodes]), merged, inverse

