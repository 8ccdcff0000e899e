"""Word-level Penn Treebank (Mikolov's preprocessing) and the bundled ``ptb-mini``.

Each line of a file is a sentence; ``<eos>`` is appended to every line. As in
Zaremba et al.'s reader, the vocabulary is ordered by decreasing count, then
alphabetically. ``ptb`` takes its vocabulary from ``ptb.train.txt`` (10k words).
``ptb-mini`` (see ``data/README.md``) is built from the real valid/test files only, so
its vocabulary is the union of its three splits (about 7.6k words).
"""

from __future__ import annotations

import collections
import functools
import gzip
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from archsearch.errors import TaskError
from archsearch.tasks._base import SPLITS, Split, Stream, Task, check_length, check_split, corpus_stream
from archsearch.tasks._metric import Kind, Metric

PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
PTB_SOURCE = "Mikolov's simple-examples.tgz (folder data/)"
MINI_FILES = {split: f"ptb_mini.{split}.txt.gz" for split in SPLITS}
EOS = "<eos>"
UNK = "<unk>"


@dataclass(frozen=True)
class _Corpus:
    vocab: tuple[str, ...]
    ids: dict[str, np.ndarray]  # split -> int64 word ids


def _read_words(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return [w for line in f for w in (*line.split(), EOS)]
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"cannot read {path}: {e}") from e


def _encode(words: list[str], index: dict[str, int], path: Path) -> np.ndarray:
    unk = index.get(UNK)
    ids = np.empty(len(words), dtype=np.int64)
    for i, w in enumerate(words):
        j = index.get(w, unk)
        if j is None:
            raise TaskError(f"{path}: word {w!r} is not in the vocabulary and there is no {UNK}")
        ids[i] = j
    return ids


@functools.lru_cache(maxsize=4)
def _load(paths: tuple[tuple[str, str], ...], vocab_splits: tuple[str, ...], stamp: tuple) -> _Corpus:
    """Read and encode the splits (cached per file set; ``stamp`` invalidates on change)."""
    words = {split: _read_words(Path(p)) for split, p in paths}
    for split, p in paths:
        if len(words[split]) < 2:
            raise TaskError(f"{p} holds no text")
    counts = collections.Counter(w for s in vocab_splits for w in words[s])
    vocab = tuple(sorted(counts, key=lambda w: (-counts[w], w)))
    index = {w: i for i, w in enumerate(vocab)}
    ids = {split: _encode(words[split], index, Path(p)) for split, p in paths}
    return _Corpus(vocab=vocab, ids=ids)


class WordTask(Task):
    """Next-word prediction on a fixed corpus; metric exp(-NLL per word) = 1/perplexity."""

    kind = Kind.SYMBOLS
    metric = Metric.EXP_NEG_NLL
    synthetic = False
    param_budgets = (5_000_000,)

    def __init__(self, name: str, paths: dict[str, Path], vocab_splits: tuple[str, ...]) -> None:
        self.name = name
        self._paths = tuple((split, str(paths[split])) for split in SPLITS)
        self._vocab_splits = vocab_splits

    def _corpus(self) -> _Corpus:
        stamp = tuple(os.stat(p).st_mtime_ns for _, p in self._paths)
        return _load(self._paths, self._vocab_splits, stamp)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Words by id."""
        return self._corpus().vocab

    @property
    def num_inputs(self) -> int:  # type: ignore[override]
        return len(self.vocabulary)

    @property
    def num_outputs(self) -> int:  # type: ignore[override]
        return len(self.vocabulary)

    def stream(self, split: Split, seed: int, length: int | None = None) -> Stream:
        """The split's words (seed ignored); the first ``length`` positions if given."""
        check_split(split)
        n = check_length(length, None)
        ids = self._corpus().ids[split]
        return corpus_stream(ids, np.ones(len(ids), dtype=np.float32), n)

    def decode(self, ids: object) -> str:
        """Word ids -> space-separated words."""
        vocab = self.vocabulary
        arr = np.asarray(ids, dtype=np.int64).ravel()
        if arr.size and (arr.min() < 0 or arr.max() >= len(vocab)):
            raise TaskError(f"{self.name}: word id out of range 0..{len(vocab) - 1}")
        return " ".join(vocab[i] for i in arr.tolist())


def ptb_task(data_dir: str | os.PathLike | None) -> WordTask:
    """The full PTB from Mikolov's three files in ``data_dir``."""
    if data_dir is None:
        raise TaskError(
            f"task 'ptb' needs a data directory (--data-dir) with "
            f"{', '.join(PTB_FILES.values())}; get them from {PTB_SOURCE}"
        )
    paths = {split: Path(data_dir) / name for split, name in PTB_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise TaskError(f"ptb: missing {path}; get {path.name} from {PTB_SOURCE}")
    return WordTask("ptb", paths, vocab_splits=("train",))


def ptb_mini_task() -> WordTask:
    """The small PTB split bundled with the package (built by scripts/build_ptb_mini.py)."""
    data = Path(str(resources.files("archsearch.tasks") / "data"))
    paths = {split: data / name for split, name in MINI_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise TaskError(f"ptb-mini: bundled file {path} is missing; run scripts/build_ptb_mini.py")
    return WordTask("ptb-mini", paths, vocab_splits=SPLITS)
