"""`python -m rl ...` runs `rl-train ...`."""

import sys

from .cli import main

sys.exit(main())
