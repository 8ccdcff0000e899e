#!/usr/bin/env python3
"""Run ``archsearch search`` with this script's arguments, for ``ray submit``.

``ray submit`` uploads a Python script to the head node and runs it there with
``python``; this wrapper turns that into the CLI, e.g.

    ray submit --tmux cluster/aws.yaml cluster/submit_search.py -- \
        --ray --ray-address auto --db sqlite:////data/archsearch.db \
        --preset paper --device cuda --data-dir /data/ptb

is the same as typing the ``archsearch search ...`` line on the head node.
"""

import sys

from archsearch.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
