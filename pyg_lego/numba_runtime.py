r"""numba, where it is installed (optional extra ``numba``): whether it
imports, and the one way pyg_lego's compiled kernels are compiled against it
and called (its threading layer, thread count and lock)."""
import os
import threading
from functools import lru_cache

import torch

#: Serialises kernel calls: the kernels release the GIL, and numba's
#: 'workqueue' threading layer must not be entered by two threads at once.
_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def available() -> bool:
    r"""Whether numba imports (an install that fails to import, e.g.
    against a NumPy it does not support, counts as absent, so that the
    callers fall back to torch)."""
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


@lru_cache(maxsize=None)
def numba():
    r"""The numba module, its threading layer chosen before any kernel
    is compiled."""
    import numba
    if 'NUMBA_THREADING_LAYER' not in os.environ:
        # numba's default 'omp' layer loads the system libgomp beside the one
        # torch ships: two OpenMP runtimes in one process, spinning against
        # each other. numba's own 'workqueue' pool ran the masked-power walks
        # as fast (N = 64,000), though each launch costs ~0.7 ms more; _LOCK
        # keeps its calls one at a time, as that layer requires. (A DDP hang
        # once blamed on the two runtimes was a gloo shutdown race, see
        # pyg_lego.training.distributed.cleanup.)
        numba.config.THREADING_LAYER = 'workqueue'
    return numba


def call(kernel, *args) -> None:
    r"""Runs a compiled :obj:`kernel` on as many threads as torch uses."""
    nb = numba()
    with _LOCK:
        nb.set_num_threads(max(1, min(torch.get_num_threads(),
                                      nb.config.NUMBA_NUM_THREADS)))
        kernel(*args)
