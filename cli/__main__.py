"""`python -m cli`: the same as the `vitals` command."""

import sys

from cli import main

sys.exit(main())
