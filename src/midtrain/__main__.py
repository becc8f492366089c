"""``python -m midtrain``: the same command line as ``midtrain``."""

import sys

from midtrain.cli import main

sys.exit(main())
