"""Polyphonic music as 88-key piano rolls (paper §3.5; Boulanger-Lewandowski et al. 2012).

Frame ``t`` is a 0/1 vector over MIDI pitches 21..108; the model predicts frame ``t+1``
with 88 sigmoids and the metric is the NLL per time step (summed over the keys).
The pieces of a split are concatenated into one stream; the position whose target is
the first frame of the next piece is not scored (mask 0).

``nottingham``, ``piano-midi``, ``jsb`` and ``musedata`` read the standard pickles from
a data directory with a restricted unpickler: only builtin containers and numbers load
(plus ``set``/``frozenset``, which protocol-2 pickles build through a global lookup);
any other global (a class, a function such as ``os.system``) raises ``TaskError``.
``chorales`` is the small set bundled in ``data/chorales.npz`` (scripts/build_chorales.py).
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from archsearch.errors import TaskError
from archsearch.tasks._base import SPLITS, Split, Stream, Task, check_length, check_split, corpus_stream
from archsearch.tasks._metric import Kind, Metric

LOWEST, HIGHEST = 21, 108
NUM_KEYS = HIGHEST - LOWEST + 1
MUSIC_FILES = {
    "nottingham": "Nottingham.pickle",
    "piano-midi": "Piano-midi.de.pickle",
    "jsb": "JSB Chorales.pickle",
    "musedata": "MuseData.pickle",
}
MUSIC_SOURCE = "Boulanger-Lewandowski et al. 2012, http://www-etud.iro.umontreal.ca/~boulanni/icml2012"
# Limits on what one pickle file may hold: the standard sets are a few MB with well under a
# million frames; a pickle that references one list many times (a few KB expanding to billions
# of notes) or an oversized file is refused before anything is expanded.
MAX_PICKLE_BYTES = 256 * 2**20
MAX_FRAMES = 5_000_000
MAX_NOTES = 20_000_000
MAX_ITEMS_PER_BYTE = 8  # (frames + notes) per pickle byte; an unshared pickle needs >= 1 byte for each
_CONTAINERS = (list, tuple, set, frozenset)
_SAFE_GLOBALS = {("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
                 ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset}

Flat = tuple[np.ndarray, np.ndarray, np.ndarray]  # notes, frame sizes, piece lengths


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global except set/frozenset, so nothing can be called or imported."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def safe_load_pickle(data: bytes, source: str = "pickle") -> object:
    """Unpickle ``data`` allowing only builtin containers and numbers.

    Raises:
        TaskError: the pickle is malformed or refers to any other global.
    """
    try:
        # latin1: the original pickles were written by Python 2
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # untrusted bytes can fail in many ways; all mean "not music data"
        raise TaskError(f"{source}: refused or unreadable pickle ({e})") from e


def _flatten_split(pieces: object, where: str) -> Flat:
    """Nested pieces -> flat arrays, checking every note is a piano key."""
    if not isinstance(pieces, (list, tuple)):
        raise TaskError(f"{where}: expected a list of pieces, got {type(pieces).__name__}")
    notes: list[object] = []
    sizes: list[int] = []
    lengths: list[int] = []
    for piece in pieces:
        if not isinstance(piece, (list, tuple)):
            raise TaskError(f"{where}: a piece is a {type(piece).__name__}, not a list of frames")
        for frame in piece:
            if not isinstance(frame, (list, tuple, set, frozenset)):
                raise TaskError(f"{where}: a frame is a {type(frame).__name__}, not a list of notes")
            notes.extend(frame)
            sizes.append(len(frame))
        lengths.append(len(piece))
    odd = next((n for n in notes if type(n) not in (int, float)), None)
    if odd is not None:
        raise TaskError(f"{where}: note {odd!r} is a {type(odd).__name__}, not a number")
    outside = next((n for n in notes if not LOWEST <= n <= HIGHEST), None)  # also NaN and 10**400
    if outside is not None:
        shown = repr(outside) if len(repr(outside)) <= 40 else f"{repr(outside)[:20]}... ({len(repr(outside))} digits)"
        raise TaskError(f"{where}: note {shown} is not a MIDI key {LOWEST}..{HIGHEST}")
    values = np.asarray(notes, dtype=np.float64)
    bad = (values != np.round(values)) | (values < LOWEST) | (values > HIGHEST)
    if bad.any():
        note = notes[int(np.argmax(bad))]
        raise TaskError(f"{where}: note {note!r} is not a MIDI key {LOWEST}..{HIGHEST}")
    return values.astype(np.int64), np.asarray(sizes, np.int64), np.asarray(lengths, np.int64)


def _roll(flat: Flat) -> tuple[np.ndarray, np.ndarray]:
    """Flat arrays -> (float32 piano roll [F, 88], mask [F] with 0 at each piece's last frame)."""
    notes, sizes, lengths = (np.asarray(a, dtype=np.int64) for a in flat)
    assert sizes.sum() == len(notes) and lengths.sum() == len(sizes), (
        f"inconsistent piano roll: {sizes.sum()} notes by frame sizes vs {len(notes)}, "
        f"{lengths.sum()} frames by piece lengths vs {len(sizes)}"
    )
    frames = np.zeros((len(sizes), NUM_KEYS), dtype=np.float32)
    frames[np.repeat(np.arange(len(sizes)), sizes), notes - LOWEST] = 1.0
    mask = np.ones(len(sizes), dtype=np.float32)
    ends = np.cumsum(lengths[lengths > 0]) - 1
    mask[ends] = 0.0  # the target there is the next piece's first frame
    return frames, mask


def check_expansion(splits: list[object], size: int, source: str) -> None:
    """Refuse unpickled music data that would expand beyond the limits (before expanding it).

    Counts in two cheap passes, pieces then frames, so a pickle whose shared references
    stand for billions of notes is refused after touching at most ``MAX_FRAMES`` frames.
    """
    pieces = [p for split in splits if isinstance(split, _CONTAINERS) for p in split if isinstance(p, _CONTAINERS)]
    frames = sum(len(p) for p in pieces)
    budget = min(MAX_NOTES + MAX_FRAMES, MAX_ITEMS_PER_BYTE * size + 1000)
    if frames > MAX_FRAMES or frames > budget:
        raise TaskError(f"{source}: {frames:,} frames in a {size:,}-byte pickle exceed the limit "
                        f"({min(MAX_FRAMES, budget):,}); refusing to expand it")
    notes = sum(len(f) for p in pieces for f in p if isinstance(f, _CONTAINERS))
    if notes > MAX_NOTES or frames + notes > budget:
        raise TaskError(f"{source}: {notes:,} notes in a {size:,}-byte pickle exceed the limit "
                        f"({min(MAX_NOTES, budget - frames):,}); refusing to expand it")


@functools.lru_cache(maxsize=2)
def _load_pickle(path: str, stamp: int) -> dict[str, Flat]:
    """Read a Boulanger-Lewandowski pickle (cached; ``stamp`` invalidates on change)."""
    try:
        size = os.stat(path).st_size
        if size > MAX_PICKLE_BYTES:
            raise TaskError(f"{path}: {size:,} bytes is more than the {MAX_PICKLE_BYTES:,} a music pickle may have")
        data = Path(path).read_bytes()
    except OSError as e:
        raise TaskError(f"cannot read {path}: {e}") from e
    obj = safe_load_pickle(data, path)
    if not isinstance(obj, dict) or not all(s in obj for s in SPLITS):
        raise TaskError(f"{path}: expected a dict with keys {', '.join(SPLITS)}")
    check_expansion([obj[s] for s in SPLITS], len(data), path)
    return {s: _flatten_split(obj[s], f"{path} [{s}]") for s in SPLITS}


@functools.lru_cache(maxsize=1)
def _load_bundled(path: str) -> dict[str, Flat]:
    with np.load(path, allow_pickle=False) as z:
        return {s: (z[f"{s}_notes"], z[f"{s}_frame_sizes"], z[f"{s}_piece_lengths"]) for s in SPLITS}


class MusicTask(Task):
    """Next-frame prediction on piano rolls; metric NLL per time step (lower is better)."""

    kind = Kind.PIANO
    num_inputs = NUM_KEYS
    num_outputs = NUM_KEYS
    metric = Metric.NLL
    synthetic = False
    param_budgets = (100_000, 1_000_000)

    def __init__(self, name: str, load: Callable[[], dict[str, Flat]]) -> None:
        self.name = name
        self._load = load

    def stream(self, split: Split, seed: int, length: int | None = None) -> Stream:
        """The split's pieces, concatenated (seed ignored); the first ``length`` positions if given."""
        check_split(split)
        n = check_length(length, None)
        frames, mask = _roll(self._load()[split])
        if len(frames) < 2:
            raise TaskError(f"{self.name}: split {split!r} has fewer than two frames")
        return corpus_stream(frames, mask, n)

    def decode(self, ids: object) -> str:
        """Frames [T, 88] (or one frame) -> ``"60 64 67 | - | ..."`` (MIDI numbers, ``-`` = silence)."""
        frames = np.atleast_2d(np.asarray(ids))
        if frames.shape[-1] != NUM_KEYS:
            raise TaskError(f"{self.name}: frames must have {NUM_KEYS} keys, got shape {frames.shape}")
        keys = (" ".join(str(k + LOWEST) for k in np.flatnonzero(f > 0.5)) for f in frames)
        return " | ".join(k or "-" for k in keys)


def pickle_music_task(name: str, data_dir: str | os.PathLike | None) -> MusicTask:
    """One of the standard music sets, from its pickle in ``data_dir``."""
    filename = MUSIC_FILES[name]
    if data_dir is None:
        raise TaskError(
            f"task {name!r} needs a data directory (--data-dir) with {filename!r}; get it from {MUSIC_SOURCE}"
        )
    path = Path(data_dir) / filename
    if not path.is_file():
        raise TaskError(f"{name}: missing {path}; get {filename!r} from {MUSIC_SOURCE}")
    return MusicTask(name, lambda: _load_pickle(str(path), os.stat(path).st_mtime_ns))


def chorales_task() -> MusicTask:
    """The Bach chorales bundled with the package (built from music21's corpus)."""
    path = Path(str(resources.files("archsearch.tasks") / "data" / "chorales.npz"))
    if not path.is_file():
        raise TaskError(f"chorales: bundled file {path} is missing; run scripts/build_chorales.py")
    return MusicTask("chorales", lambda: _load_bundled(str(path)))
