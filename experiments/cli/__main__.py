"""`python -m experiments.cli` runs the `modelramp` console script."""

import sys

from experiments.cli import main

sys.exit(main())
