"""`python -m vfsframe` runs the `vfsframe` command."""

import sys

from vfsframe.cli import main

sys.exit(main())
