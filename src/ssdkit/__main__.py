"""``python -m ssdkit ...``: the same command line as the ``ssdkit`` script (torchrun runs modules this way)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
