#!/usr/bin/env python3
"""Put Mikolov's word-level PTB files into a directory on this node (stdlib only).

    python cluster/fetch_ptb.py /data/ptb
    python cluster/fetch_ptb.py /data/ptb --url file:///mnt/share/simple-examples.tgz

Every node that trains on ``ptb`` needs ``ptb.train.txt``, ``ptb.valid.txt`` and
``ptb.test.txt`` under the same path (given to ``archsearch search --data-dir``).
The ray up configs run this in ``setup_commands`` and the KubeRay manifests in an
init container. It does nothing when the three files are already there, so it is
safe to run on every start. Only those three members of the archive are written
(by base name, so a hostile archive cannot write elsewhere), each atomically.

The default source is the archive distributed by Tomas Mikolov
(``simple-examples.tgz``, folder ``data/``). Set ``--url`` or the environment
variable ``ARCHSEARCH_PTB_URL`` to a mirror or a ``file://`` path for clusters
without internet access.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

DEFAULT_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")


def have_all(dest: Path) -> bool:
    return all((dest / name).is_file() and (dest / name).stat().st_size > 0 for name in FILES)


def extract(archive: Path, dest: Path) -> list[str]:
    """Write the three PTB files found in ``archive`` into ``dest``; return their names."""
    written = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            # Mikolov's archive also has ptb.char.* files; only data/ptb.{split}.txt are wanted.
            if not member.isfile() or name not in FILES or Path(member.name).parent.name != "data":
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
            try:
                with os.fdopen(fd, "wb") as out, source:
                    shutil.copyfileobj(source, out)
                os.replace(tmp, dest / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            written.append(name)
    return written


def fetch(dest: Path, url: str) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    if have_all(dest):
        print(f"fetch_ptb: {dest} already has {', '.join(FILES)}")
        return 0
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".download.", suffix=".tgz")
    os.close(fd)
    try:
        print(f"fetch_ptb: downloading {url}")
        with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
        extract(Path(tmp), dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    if not have_all(dest):
        missing = [name for name in FILES if not (dest / name).is_file()]
        print(f"fetch_ptb: error: {url} has no data/{', data/'.join(missing)}", file=sys.stderr)
        return 1
    print(f"fetch_ptb: wrote {', '.join(FILES)} to {dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory that receives ptb.{train,valid,test}.txt")
    parser.add_argument(
        "--url",
        default=os.environ.get("ARCHSEARCH_PTB_URL", DEFAULT_URL),
        help="archive to read (http(s):// or file://); default: $ARCHSEARCH_PTB_URL or Mikolov's",
    )
    args = parser.parse_args(argv)
    try:
        return fetch(args.dest, args.url)
    except (OSError, tarfile.TarError) as e:
        print(f"fetch_ptb: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
