"""``python -m sie3d ...``: the ``sie3d`` command line where its console script is not installed."""

import sys

from .cli import main

sys.exit(main())
