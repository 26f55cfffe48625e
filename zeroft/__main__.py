"""``python -m zeroft``: see zeroft.cli."""

import sys

from .cli import main

sys.exit(main())
