"""`python -m scimgate.cli`: the `scimgate` command."""

import sys

from scimgate.cli import main

sys.exit(main())
