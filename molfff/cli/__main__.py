"""`python -m molfff.cli`."""

import sys

from molfff.cli import main

sys.exit(main())
