r"""Checks of user input that run before any computation, with messages that
name the view and the problem."""
import numbers
from typing import Any, Mapping, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

# What the checks read from a tensor's values, per tensor object and
# version (an in-place change bumps the version and the values are read
# again): a graph checked once, at the data boundary or by its first
# forward, is not read again on every forward (on a GPU, each read waits
# for the device). Weak keys: a freed tensor leaves the cache.
_EDGE_FACTS: 'WeakIdKeyDictionary' = WeakIdKeyDictionary()
_FINITE: 'WeakIdKeyDictionary' = WeakIdKeyDictionary()


def edge_facts(edge_index: Tensor) -> Tuple[int, int, bool]:
    r"""The smallest and largest node id of a :math:`(2, E)` index tensor
    (:obj:`0, -1` without edges) and whether its edges are coalesced
    (sorted by row, then column, no duplicates; ids assumed >= 0), read
    once per tensor and version: later calls with the same unchanged
    tensor read no values."""
    facts = _EDGE_FACTS.get(edge_index)
    if facts is not None and facts[0] == edge_index._version:
        return facts[1:]
    if edge_index.numel() == 0:
        lo, hi = 0, -1
    else:
        lo, hi = (int(v) for v in torch.stack(
            torch.aminmax(edge_index)).tolist())
    coalesced = True
    if edge_index.size(-1) > 1:
        key = edge_index[0] * (hi + 1) + edge_index[1]
        coalesced = bool((key[1:] > key[:-1]).all())
    _EDGE_FACTS[edge_index] = (edge_index._version, lo, hi, coalesced)
    return lo, hi, coalesced


def all_finite(x: Tensor) -> bool:
    r"""Whether :obj:`x` holds no NaN or Inf, read once per tensor and
    version (as :func:`edge_facts`)."""
    known = _FINITE.get(x)
    if known is not None and known == x._version:
        return True
    if not bool(torch.isfinite(x).all()):
        return False
    _FINITE[x] = x._version
    return True


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be a positive integer (k >= 1), got {k}; "
                         f"k >= N - 1 gives the complete graph")
    return int(k)


def check_order(P: Any) -> int:
    if isinstance(P, bool) or not isinstance(P, numbers.Integral) or P < 0:
        raise ValueError(f"P (the highest order) must be an integer >= 0, "
                         f"got {P!r}")
    return int(P)


def check_features(name: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"view '{name}' must be a torch.Tensor of features "
                        f"[N, d] or a GivenGraph, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"view '{name}' must have shape [N, d], got "
                         f"{list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"view '{name}' has dtype {x.dtype}: features must be "
                        f"floating point (cast with .float())")
    if x.size(0) == 0 or x.size(1) == 0:
        raise ValueError(f"view '{name}' is empty (shape {list(x.shape)})")
    return x


def check_finite(name: str, x: Tensor) -> Tensor:
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0]
        value = x[bad[0], bad[1]].item()
        raise ValueError(f"view '{name}' contains {value} at row "
                         f"{int(bad[0])}, column {int(bad[1])}: features must "
                         f"be finite (no NaN or Inf)")
    return x


def check_edge_index(edge_index: Any, num_nodes: Optional[int] = None,
                     what: str = 'edge_index') -> Tensor:
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor [2, E], got "
                        f"{type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{what} must have shape [2, E], got "
                         f"{list(edge_index.shape)}")
    if edge_index.dtype != torch.long:
        raise TypeError(f"{what} has dtype {edge_index.dtype}; it must be "
                        f"torch.long")
    if num_nodes is not None and edge_index.numel() > 0:
        lo, hi, _ = edge_facts(edge_index)
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"{what} has node index {lo if lo < 0 else hi} "
                             f"out of range for {num_nodes} nodes")
    return edge_index


def check_gamma(gamma: Any) -> None:
    if gamma is not None and not float(gamma) > 0:
        raise ValueError(f"gamma (the RBF bandwidth) must be > 0, got "
                         f"{gamma!r}")


def zero_norm_rows(x: Tensor) -> Tensor:
    return (x.detach().abs().sum(-1) == 0).nonzero().view(-1)


def check_same_device(tensors: Mapping[str, Tensor]) -> Optional[torch.device]:
    device, first = None, None
    for name, t in tensors.items():
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise ValueError(f"view '{name}' is on {t.device} but view "
                             f"'{first}' is on {device}: move all views to "
                             f"one device")
    return device
