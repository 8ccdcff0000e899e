"""Build the bundled ``ptb-mini`` task data from the real PTB valid/test files.

Run once from the repository root (the output is committed):

    python scripts/build_ptb_mini.py [--src /work/shared/data/ptb]

Sources (Mikolov's preprocessing, as distributed with Zaremba et al.'s ``lstm`` code):

    ptb.valid.txt  sha256 c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2
    ptb.test.txt   sha256 dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0

Splits (whole lines): train = the first 90% of the lines of ptb.valid.txt, valid = its
last 10%, test = all of ptb.test.txt. Written as gzip text (mtime 0, so a rebuild is
byte-identical) to tasks/data/ptb_mini.{train,valid,test}.txt.gz.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

# ---------------------------------------------------------------- config
SOURCE_SHA256 = {
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
TRAIN_FRACTION = 0.9
OUT_DIR = Path(__file__).resolve().parents[1] / "tasks" / "data"


def read_checked(path: Path) -> list[str]:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256[path.name]:
        raise SystemExit(f"{path}: sha256 {digest} is not the expected {SOURCE_SHA256[path.name]}")
    return data.decode("utf-8").splitlines(keepends=True)


def write_gzip(path: Path, lines: list[str]) -> None:
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as f:
            f.write("".join(lines).encode("utf-8"))
    words = sum(len(line.split()) + 1 for line in lines)  # + <eos>
    print(f"{path.name}: {len(lines)} lines, {words} tokens, {path.stat().st_size} bytes, "
          f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/work/shared/data/ptb"))
    args = parser.parse_args()
    valid = read_checked(args.src / "ptb.valid.txt")
    test = read_checked(args.src / "ptb.test.txt")
    cut = int(len(valid) * TRAIN_FRACTION)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_gzip(OUT_DIR / "ptb_mini.train.txt.gz", valid[:cut])
    write_gzip(OUT_DIR / "ptb_mini.valid.txt.gz", valid[cut:])
    write_gzip(OUT_DIR / "ptb_mini.test.txt.gz", test)


if __name__ == "__main__":
    main()
