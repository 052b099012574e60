"""``python -m opt_mcp``: the same as the ``opt-mcp`` command."""

import sys

from opt_mcp.cli import main

sys.exit(main())
