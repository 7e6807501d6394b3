r"""``python -m pyg_lego.distributed``: the partitioned pipeline, one process
per rank (see :mod:`pyg_lego.distributed.pipeline`)."""
import sys

from pyg_lego.distributed.pipeline import main

if __name__ == '__main__':
    sys.exit(main())
