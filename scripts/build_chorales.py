"""Build the bundled ``chorales`` music task from the Bach chorales that music21 ships.

Run once from the repository root (the output is committed; loading it needs only numpy):

    python scripts/build_chorales.py

Source: ``music21.corpus.getComposer("bach")``, the ``bwv*.mxl`` files (the source of the
JSB Chorales set). A score is kept if it has exactly four parts (SATB). As in JSB
Chorales, each chorale is sampled every quarter note: frame ``t`` holds the MIDI pitches
sounding at offset ``t`` (note onset <= t < onset + duration). Exact duplicate piano rolls
are dropped. The pieces, sorted by file name, are shuffled with seed 0 and split 60/20/20
into train/valid/test (JSB: 229/76/77).

Output: tasks/data/chorales.npz with, for each split, ``{split}_notes`` (int8 MIDI
numbers, frame after frame), ``{split}_frame_sizes`` (uint8 notes per frame) and
``{split}_piece_lengths`` (int32 frames per piece); plus ``sources`` (file names).
Timestamps inside the .npz are fixed, so a rebuild is byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from music21 import __version__ as music21_version
from music21 import corpus

# ---------------------------------------------------------------- config
SPLIT_FRACTIONS = {"train": 0.6, "valid": 0.2}  # test gets the rest
SHUFFLE_SEED = 0
STEP = 1.0  # quarter notes per frame
LOWEST, HIGHEST = 21, 108  # the 88 piano keys
OUT = Path(__file__).resolve().parents[1] / "tasks" / "data" / "chorales.npz"


def piano_roll(path: Path) -> list[tuple[int, ...]] | None:
    """The chorale as a list of frames (sorted MIDI pitches), or None if not four parts."""
    score = corpus.parse(path)
    if len(score.parts) != 4:
        return None
    length = float(score.highestTime)
    frames: list[set[int]] = [set() for _ in range(int(np.ceil(length / STEP)))]
    for element in score.flatten().notes:
        start, end = float(element.offset), float(element.offset + element.quarterLength)
        if end <= start:  # grace notes
            continue
        first = int(np.ceil(start / STEP - 1e-9))
        for t in range(first, len(frames)):
            if t * STEP >= end - 1e-9:
                break
            frames[t].update(p.midi for p in element.pitches if LOWEST <= p.midi <= HIGHEST)
    return [tuple(sorted(f)) for f in frames]


def flatten(pieces: list[list[tuple[int, ...]]]) -> dict[str, np.ndarray]:
    return {
        "notes": np.array([n for piece in pieces for f in piece for n in f], dtype=np.int8),
        "frame_sizes": np.array([len(f) for piece in pieces for f in piece], dtype=np.uint8),
        "piece_lengths": np.array([len(piece) for piece in pieces], dtype=np.int32),
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Like ``np.savez_compressed`` but with fixed timestamps, so a rebuild is byte-identical."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buffer.getvalue()


# ---------------------------------------------------------------- main
def main() -> None:
    paths = sorted(
        (p for p in corpus.getComposer("bach") if p.name.startswith("bwv") and p.suffix == ".mxl"),
        key=lambda p: p.name,
    )
    kept: dict[tuple, str] = {}
    for path in paths:
        roll = piano_roll(path)
        if roll and tuple(roll) not in kept:
            kept[tuple(roll)] = path.name
    rolls = [list(r) for r in kept]
    names = list(kept.values())
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(rolls))
    n_train = int(len(rolls) * SPLIT_FRACTIONS["train"])
    n_valid = int(len(rolls) * SPLIT_FRACTIONS["valid"])
    n_head = n_train + n_valid
    parts = {"train": order[:n_train], "valid": order[n_train:n_head], "test": order[n_head:]}
    arrays: dict[str, np.ndarray] = {}
    for split, idx in parts.items():
        for key, value in flatten([rolls[i] for i in idx]).items():
            arrays[f"{split}_{key}"] = value
        print(f"{split}: {len(idx)} chorales, {int(arrays[f'{split}_piece_lengths'].sum())} frames")
    arrays["sources"] = np.array([names[i] for i in order], dtype="U32")
    OUT.write_bytes(npz_bytes(arrays))
    print(f"{len(paths)} files, {len(rolls)} kept (music21 {music21_version}); {OUT.name}: "
          f"{OUT.stat().st_size} bytes, sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
