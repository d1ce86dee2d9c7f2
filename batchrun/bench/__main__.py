"""``python -m batchrun.bench`` runs the bench (``make bench``)."""

import sys

from batchrun.bench.cli import main

sys.exit(main())
