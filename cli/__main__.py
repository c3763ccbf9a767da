"""``python -m prefpair.cli``: the same as the ``prefpair`` command."""

import sys

from prefpair.cli import main

sys.exit(main())
