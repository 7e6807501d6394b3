from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch.nn import Parameter

from pyg_lego.data.validation import check_order

KINDS = ('polynomial', 'linear', 'geometric')

#: Added to every relation score before the geometric fusion takes its
#: logarithm, so that a zero score (an edge a view does not propose) gives a
#: small finite factor instead of :math:`\log 0`.
GEOMETRIC_EPS = 1e-6

#: Elements of the ``[edges, C, rank, M]`` factor tensor that the CP fusion
#: holds at once: beyond it, it runs in edge chunks and recomputes the
#: factors in its backward pass instead of saving them (it saves 2.8x less
#: for the backward pass, benchmarks/results/switches.md).
CP_CHUNK_ELEMENTS = 1 << 22
#: Factor elements per chunk once chunked, so that a chunk's temporaries
#: stay in cache: with the per-view einsum this code used before, forward
#: and backward at 2.4M edges (M = 3, rank 4) took 0.66x the time of chunks
#: of ``CP_CHUNK_ELEMENTS``.
CP_CHUNK = 1 << 19


def _block_weight(w: Tensor) -> Tensor:
    r"""The CP coefficients :math:`(C, R, M, P + 1)` as one block-diagonal
    :math:`(M (P + 1), C R M)` matrix, so that the factors
    :math:`\langle \mathbf{x}_{e, m}, \mathbf{W}_{c, r, m} \rangle` of all
    views are one matrix product of the flattened scores: :math:`M` times
    the multiply-adds of the per-view products, but one GEMM in place of
    :math:`M` batched products with an inner size of :math:`P + 1`.
    Forward and backward of the polynomial fusion at 2.4M edges
    (:math:`M = 3`, rank 4) took 0.30x the time of the per-view einsum
    (0.48x at 300k edges)."""
    C, R, M, n = w.shape
    eye = torch.eye(M, dtype=w.dtype, device=w.device)
    return torch.einsum('crmp,mk->mpcrk', w, eye).reshape(M * n, C * R * M)


def _cp_factors(x: Tensor, block: Tensor, shape: torch.Size) -> Tensor:
    r"""The factors :math:`(|\mathcal{E}|, C, R, M)` of scores :obj:`x`
    :math:`(|\mathcal{E}|, M, P + 1)` under :func:`_block_weight`."""
    C, R, M, n = shape
    return (x.reshape(x.size(0), M * n) @ block).view(-1, C, R, M)


class ChunkedCP(torch.autograd.Function):
    r"""The CP polynomial :math:`\sum_r \prod_m \langle \mathbf{x}_{e, m},
    \mathbf{W}_{c, r, m} \rangle` in chunks of :obj:`chunk` edges, saving only
    its inputs. The plain form saves the :math:`(|\mathcal{E}|, C, R, M)`
    factors and allocates several more of that size in its backward pass
    (forward and backward grew the resident memory by 7.6 GB at
    :math:`|\mathcal{E}| = 39` M, :math:`R = 4`, :math:`M = 3`). With
    :math:`\mathbf{f}_{ecrm}` the factors and
    :math:`\bar{\mathbf{f}}_{ecrm} = \prod_{m' \ne m} \mathbf{f}_{ecrm'}`
    (prefix and suffix products, no division):

    .. math::
        \nabla \mathbf{x}_{emp} = \sum_{c, r} g_{ec} \bar{\mathbf{f}}_{ecrm}
        \mathbf{W}_{crmp}, \qquad
        \nabla \mathbf{W}_{crmp} = \sum_e g_{ec} \bar{\mathbf{f}}_{ecrm}
        \mathbf{x}_{emp}.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, chunk: int) -> Tensor:
        block = _block_weight(w)
        out = x.new_empty(x.size(0), w.size(0))
        for s in range(0, x.size(0), chunk):
            f = _cp_factors(x[s:s + chunk], block, w.shape)
            out[s:s + chunk] = f.prod(dim=-1).sum(dim=-1)
        ctx.save_for_backward(x, w)
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        C, R, M, n = w.shape
        block = _block_weight(w)
        flat = x.reshape(x.size(0), M * n)
        grad_x = torch.empty_like(flat) if ctx.needs_input_grad[0] else None
        grad_block = torch.zeros_like(block) \
            if ctx.needs_input_grad[1] else None
        for s in range(0, x.size(0), ctx.chunk):
            xc = flat[s:s + ctx.chunk]
            f = _cp_factors(xc, block, w.shape)
            # df[..., m] = g * (product of the factors before m) * (after m);
            # the prefix starts from g so that it is multiplied in once.
            df = torch.empty_like(f)
            before = [grad[s:s + ctx.chunk, :, None].expand(-1, C, R)]
            for m in range(1, M):
                before.append(before[-1] * f[..., m - 1])
            after = None
            for m in range(M - 1, -1, -1):
                if after is None:
                    df[..., m] = before[m]
                    after = f[..., m]
                else:
                    torch.mul(before[m], after, out=df[..., m])
                    after = after * f[..., m]
            df = df.view(-1, C * R * M)
            if grad_x is not None:
                torch.mm(df, block.t(), out=grad_x[s:s + ctx.chunk])
            if grad_block is not None:
                grad_block.addmm_(xc.t(), df)
        if grad_x is not None:
            grad_x = grad_x.view_as(x)
        grad_w = None
        if grad_block is not None:
            grad_w = grad_block.view(M, n, C, R, M) \
                .diagonal(dim1=0, dim2=4).permute(1, 2, 3, 0)
        return grad_x, grad_w, None


@dataclass
class CoefficientTable:
    r"""A learned coefficient table with named rows and columns: the fusion
    model's explanation of which views and orders it relies on."""
    values: Tensor
    rows: List[str]
    cols: List[str]
    title: str

    def to_dict(self) -> Dict[str, Dict[str, float]]:
        return {r: {c: float(self.values[i, j])
                    for j, c in enumerate(self.cols)}
                for i, r in enumerate(self.rows)}

    def to_markdown(self, digits: int = 3) -> str:
        lines = [f'| {self.title} | ' + ' | '.join(self.cols) + ' |',
                 '|---' * (len(self.cols) + 1) + '|']
        for i, r in enumerate(self.rows):
            cells = ' | '.join(f'{float(v):.{digits}f}'
                               for v in self.values[i])
            lines.append(f'| {r} | {cells} |')
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


class LEGOFusion(torch.nn.Module):
    r"""The learnable fusion operator of LEGO from the
    "Learnable Expansion of Graph Operators for Multi-Modal Feature
    Fusion" paper (ICLR 2025): it
    combines the hop-wise relation scores
    :math:`\mathbf{R}^{(p)}_m` of all views into :math:`C` fused graphs.

    **polynomial** (the paper's multilinear form). With two views and
    :obj:`rank=None`, a full :math:`(P + 1) \times (P + 1)` matrix per
    channel:

    .. math::
        \mathbf{G}_c = \sum_{p, q} \mathbf{A}_{c, pq} \,
        \mathbf{R}^{(p)}_1 \odot \mathbf{R}^{(q)}_2

    otherwise the coefficient tensor in CP (low-rank) form, which with two
    views and :obj:`rank = P + 1` spans every full matrix:

    .. math::
        \mathbf{G}_c = \sum_{r=1}^{\mathrm{rank}} \prod_{m=1}^{M}
        \Big( \sum_{p=0}^{P} a_{c, r, m, p} \, \mathbf{R}^{(p)}_m \Big)

    **linear** (like GPR-GNN's hop weights):

    .. math::
        \mathbf{G}_c = \sum_{m, p} w_{c, m, p} \, \mathbf{R}^{(p)}_m

    **geometric** (a weighted geometric mean: the linear fusion of the
    scores' logarithms, with :math:`\epsilon` = :data:`GEOMETRIC_EPS`):

    .. math::
        \mathbf{G}_c = \prod_{m, p} \big(\mathrm{ReLU}(\mathbf{R}^{(p)}_m)
        + \epsilon\big)^{w_{c, m, p}}
        = \exp\Big( \sum_{m, p} w_{c, m, p} \,
        \log\big(\mathrm{ReLU}(\mathbf{R}^{(p)}_m) + \epsilon\big) \Big)

    An edge weighs much only where every view with a positive exponent
    scores it high: the views must agree, where the linear fusion lets one
    view's high score stand for all. The weights are positive by
    construction, and an exponent near 0 leaves a view out.
    In the element-wise mode :math:`\log R^p = p \log R` (for
    :math:`R \gg \epsilon`), so a view's orders act together: its
    exponent on :math:`R_m` is :math:`\sum_p p \, w_{c, m, p}`, and order 0
    (1 on the self-loops, 0 elsewhere) scales every other edge against the
    self-loops by :math:`\epsilon^{\sum_m w_{c, m, 0}}`. Read the table
    that way there.

    All products are element-wise on the edges, so the fused graph lives on
    the same pattern as its inputs. Coefficients start near the plain average
    (linear: :math:`1 / (M (P + 1))`; polynomial: the product of each view's
    mean over orders; geometric: exponents :math:`1 / M` on order 1, the
    geometric mean of the views' order-1 relations, and near 0 on the other
    orders), with a small random spread so that channels differ.

    Args:
        num_views (int): Number of views :math:`M`.
        P (int): Highest order :math:`P`.
        out_channels (int, optional): Number of fused graphs :math:`C`.
            (default: :obj:`1`)
        kind (str, optional): :obj:`"polynomial"`, :obj:`"linear"` or
            :obj:`"geometric"`. (default: :obj:`"polynomial"`)
        rank (int, optional): CP rank of the polynomial; :obj:`None` means a
            full matrix for two views and :math:`P + 1` otherwise.
        view_names (list of str, optional): Names for the coefficient tables.

    Shapes:
        - **input:** :math:`(|\mathcal{E}|, M, P + 1)`
        - **output:** :math:`(|\mathcal{E}|, C)`
    """

    def __init__(self, num_views: int, P: int, out_channels: int = 1,
                 kind: str = 'polynomial', rank: Optional[int] = None,
                 view_names: Optional[Sequence[str]] = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if num_views < 1 or out_channels < 1:
            raise ValueError("num_views and out_channels must be >= 1")
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if view_names is not None and len(view_names) != num_views:
            raise ValueError(f"got {len(view_names)} view names for "
                             f"{num_views} views")
        self.num_views = num_views
        self.P = check_order(P)
        self.out_channels = out_channels
        self.kind = kind
        self.view_names = list(view_names) if view_names is not None else \
            [f'view{m}' for m in range(num_views)]
        self.full = kind == 'polynomial' and num_views == 2 and rank is None
        if kind == 'polynomial' and not self.full and rank is None:
            rank = P + 1
        self.rank = rank if kind == 'polynomial' and not self.full else None
        n = P + 1
        if kind in ('linear', 'geometric'):
            shape = (out_channels, num_views, n)
        elif self.full:
            shape = (out_channels, n, n)
        else:
            shape = (out_channels, self.rank, num_views, n)
        self.weight = Parameter(torch.empty(shape))
        self.reset_parameters()

    def reset_parameters(self):
        n = self.P + 1
        if self.kind == 'geometric':
            base = 1.0 / self.num_views
            with torch.no_grad():
                self.weight.uniform_(0.0, 0.1 * base)
                self.weight[:, :, min(1, self.P)].uniform_(0.9 * base,
                                                           1.1 * base)
            return
        if self.kind == 'linear':
            base = 1.0 / (self.num_views * n)
        elif self.full:
            base = 1.0 / (n * n)
        else:
            # Each of the M factors averages its orders; the rank-th root
            # spreads the 1 / rank of the component sum over the factors.
            base = self.rank**(-1.0 / self.num_views) / n
        with torch.no_grad():
            self.weight.uniform_(0.9 * base, 1.1 * base)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.size(1) != self.num_views or \
                x.size(2) != self.P + 1:
            raise ValueError(f"expected input [|E|, {self.num_views}, "
                             f"{self.P + 1}] (views, orders), got "
                             f"{list(x.shape)}")
        if not x.is_floating_point():
            # Casting the weights to an integer type would truncate them.
            raise TypeError(f"expected floating-point relation scores, got "
                            f"{x.dtype}")
        w = self.weight.to(x.dtype)
        if self.kind == 'linear':
            return torch.einsum('emp,cmp->ec', x, w)
        if self.kind == 'geometric':
            logs = (x.clamp_min(0.0) + GEOMETRIC_EPS).log()
            return torch.einsum('emp,cmp->ec', logs, w).exp()
        if self.full:
            return torch.einsum('ep,cpq,eq->ec', x[:, 0], w, x[:, 1])
        per_edge = w.size(0) * w.size(1) * w.size(2)
        if x.size(0) * per_edge > CP_CHUNK_ELEMENTS and \
                torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return ChunkedCP.apply(x, w, max(1, CP_CHUNK // per_edge))
        factors = _cp_factors(x, _block_weight(w), w.shape)
        return factors.prod(dim=-1).sum(dim=-1)

    def coefficients(self, channel: int = 0) -> CoefficientTable:
        r"""The learned coefficients of one channel as a named table:
        views x orders (linear; geometric: the exponents), orders of the
        first view x orders of the second (full polynomial), or
        (component, view) x orders (CP)."""
        if not 0 <= channel < self.out_channels:
            raise IndexError(f"channel {channel} out of range for "
                             f"{self.out_channels} channels")
        w = self.weight.detach()[channel].cpu()
        orders = [f'p={p}' for p in range(self.P + 1)]
        if self.kind in ('linear', 'geometric'):
            return CoefficientTable(w, list(self.view_names), orders,
                                    'view \\ order')
        if self.full:
            first, second = self.view_names
            return CoefficientTable(
                w, [f'{first} p={p}' for p in range(self.P + 1)],
                [f'{second} q={q}' for q in range(self.P + 1)],
                f'{first} \\ {second}')
        rows = [f'r{r} {name}' for r in range(self.rank)
                for name in self.view_names]
        return CoefficientTable(w.reshape(-1, self.P + 1), rows, orders,
                                'component view \\ order')

    def __repr__(self) -> str:
        rank = f', rank={self.rank}' if self.rank is not None else ''
        return (f'{self.__class__.__name__}(num_views={self.num_views}, '
                f'P={self.P}, out_channels={self.out_channels}, '
                f'kind={self.kind!r}{rank})')
