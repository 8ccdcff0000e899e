"""``python -m archsearch``: the same as the ``archsearch`` command."""

import sys

from archsearch.cli import main

sys.exit(main())
