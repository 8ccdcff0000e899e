"""Corpus tasks: PTB (files in a data dir), ptb-mini, music pickles and the bundled chorales."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archsearch.errors import TaskError
from archsearch.tasks import NUM_KEYS, get_task, safe_load_pickle


# ------------------------------------------------------------------ ptb
def _write_ptb(root: Path, skip: str | None = None) -> None:
    texts = {
        "ptb.train.txt": " the cat sat on the mat \n the dog <unk> \n",
        "ptb.valid.txt": " the dog sat \n",
        "ptb.test.txt": " a cat sat \n",  # "a" is not in the train vocabulary -> <unk>
    }
    for name, text in texts.items():
        if name != skip:
            (root / name).write_text(text)


def test_ptb_from_data_dir(tmp_path: Path) -> None:
    _write_ptb(tmp_path)
    task = get_task("ptb", tmp_path)
    assert (task.kind, task.metric, task.synthetic) == ("symbols", "exp_neg_nll", False)
    assert task.param_budgets == (5_000_000,)
    # by decreasing train count, then alphabetically
    assert task.vocabulary == ("the", "<eos>", "<unk>", "cat", "dog", "mat", "on", "sat")
    assert task.num_inputs == task.num_outputs == 8
    train = task.stream("train", seed=0)
    assert task.decode(train.inputs) == "the cat sat on the mat <eos> the dog <unk>"
    assert task.decode(train.targets) == "cat sat on the mat <eos> the dog <unk> <eos>"
    assert train.inputs.dtype == np.int64 and train.mask.dtype == np.float32 and train.mask.all()
    np.testing.assert_array_equal(train.targets[:-1], train.inputs[1:])
    assert task.decode(task.stream("test", seed=0).inputs) == "<unk> cat sat"
    assert len(task.stream("valid", seed=5, length=2)) == 2
    assert len(task.stream("valid", seed=5, length=100)) == 3  # capped at the whole split
    np.testing.assert_array_equal(task.stream("valid", 1).inputs, task.stream("valid", 2).inputs)


@pytest.mark.parametrize("missing", ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"])
def test_ptb_missing_file(tmp_path: Path, missing: str) -> None:
    _write_ptb(tmp_path, skip=missing)
    with pytest.raises(TaskError, match=f"missing .*{missing}.*simple-examples.tgz"):
        get_task("ptb", tmp_path)


def test_ptb_needs_a_data_dir(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="needs a data directory.*simple-examples.tgz"):
        get_task("ptb")
    with pytest.raises(TaskError, match="missing"):
        get_task("ptb", tmp_path / "nowhere")


def test_ptb_mini_is_bundled_real_text() -> None:
    task = get_task("ptb-mini", data_dir="/does/not/matter")
    assert 5_000 < task.num_inputs <= 10_000
    assert {"<eos>", "<unk>", "the", "N"} <= set(task.vocabulary)
    lengths = {split: len(task.stream(split, seed=0)) for split in ("train", "valid", "test")}
    assert 55_000 < lengths["train"] < 70_000
    assert 5_000 < lengths["valid"] < 10_000
    assert 75_000 < lengths["test"] < 85_000
    assert task.decode(task.stream("train", 0, length=5).inputs) == "consumers may want to move"
    with pytest.raises(TaskError, match="out of range"):
        task.decode([task.num_inputs])


# ------------------------------------------------------------------ music pickles
SONGS = {
    "train": [[(60, 64, 67), (60,), ()], [[21, 108], (62.0,)]],
    "valid": [[(70,), (71,)]],
    "test": [[{72, 76}, frozenset({77})], [(50,), (51,), (52,)]],
}


def _dump(path: Path, obj: object, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_music_pickle_loads_as_piano_roll(tmp_path: Path, protocol: int) -> None:
    _dump(tmp_path / "JSB Chorales.pickle", SONGS, protocol)
    task = get_task("jsb", tmp_path)
    assert (task.kind, task.num_inputs, task.num_outputs, task.metric) == ("piano", 88, 88, "nll")
    s = task.stream("train", seed=0)
    assert s.inputs.shape == s.targets.shape == (4, NUM_KEYS) and s.inputs.dtype == np.float32
    assert set(np.unique(s.inputs).tolist()) <= {0.0, 1.0}
    assert task.decode(s.inputs) == "60 64 67 | 60 | - | 21 108"
    assert task.decode(s.targets) == "60 | - | 21 108 | 62"
    np.testing.assert_array_equal(s.mask, [1, 1, 0, 1])  # position 2 crosses into the next piece
    test = task.stream("test", seed=0)
    assert task.decode(test.inputs) == "72 76 | 77 | 50 | 51" and test.mask.tolist() == [1, 0, 1, 1]
    assert len(task.stream("test", seed=0, length=2)) == 2


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch '{marker}'",))

    payload = {"train": [[Evil()]], "valid": [], "test": []}
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        _dump(tmp_path / "Nottingham.pickle", payload, protocol)
        task = get_task("nottingham", tmp_path)
        with pytest.raises(TaskError, match="refused or unreadable pickle.*system"):
            task.stream("train", seed=0)
    with pytest.raises(TaskError, match="builtins.eval"):
        safe_load_pickle(b"cbuiltins\neval\n(S'1+1'\ntR.")
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj, message",
    [
        ([1, 2], "expected a dict"),
        ({"train": [], "valid": []}, "expected a dict"),
        ({"train": [[(20,)]], "valid": [], "test": []}, "not a MIDI key"),
        ({"train": [[(60.5,)]], "valid": [], "test": []}, "not a MIDI key"),
        ({"train": [[60]], "valid": [], "test": []}, "not a list of notes"),
        ({"train": [[("60",)]], "valid": [], "test": []}, "not a number"),
        ({"train": [[(True,)]], "valid": [], "test": []}, "not a number"),
        ({"train": [[(60,)]], "valid": "x", "test": []}, "expected a list of pieces"),
    ],
)
def test_bad_music_data(tmp_path: Path, obj: object, message: str) -> None:
    _dump(tmp_path / "MuseData.pickle", obj)
    with pytest.raises(TaskError, match=message):
        get_task("musedata", tmp_path).stream("train", seed=0)


def test_music_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="missing .*Piano-midi.de.pickle.*boulanni"):
        get_task("piano-midi", tmp_path)
    (tmp_path / "Piano-midi.de.pickle").write_bytes(b"not a pickle")
    with pytest.raises(TaskError, match="refused or unreadable"):
        get_task("piano-midi", tmp_path).stream("valid", seed=0)
    with pytest.raises(TaskError, match="needs a data directory"):
        get_task("jsb")


# ------------------------------------------------------------------ bundled chorales
def test_chorales_bundled() -> None:
    task = get_task("chorales")
    pieces = 0
    for split in ("train", "valid", "test"):
        s = task.stream(split, seed=0)
        assert s.inputs.shape == s.targets.shape == (len(s), NUM_KEYS) and len(s) > 1000
        assert set(np.unique(s.inputs).tolist()) == {0.0, 1.0}
        np.testing.assert_array_equal(s.targets[:-1], s.inputs[1:])
        voices = s.inputs.sum(axis=1)
        assert 3.0 < voices.mean() <= 4.0 and voices.max() <= 8  # four-part chorales
        keys = np.flatnonzero(s.inputs.any(axis=0))
        assert keys.min() >= 30 - 21 and keys.max() <= 84 - 21  # SATB range
        pieces += int((s.mask == 0).sum()) + 1
    assert 250 < pieces < 433


def test_chorales_load_without_music21() -> None:
    code = (
        "import sys; sys.modules['music21'] = None\n"
        "from archsearch.tasks import get_task\n"
        "s = get_task('chorales').stream('valid', seed=0, length=100)\n"
        "assert s.inputs.shape == (100, 88)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------ expansion limits (memory bombs)
def _shared_reference_bomb() -> bytes:
    """A few KB that unpickle to ~10^10 notes: one chord referenced by every frame, one piece by every piece."""
    chord = list(range(21, 109))
    piece = [chord] * 20_000
    return pickle.dumps({"train": [piece] * 5_000, "valid": [], "test": []}, protocol=2)


def test_shared_reference_bomb_is_refused_before_expanding(tmp_path: Path) -> None:
    import resource

    data = _shared_reference_bomb()
    assert len(data) < 100_000
    (tmp_path / "Nottingham.pickle").write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TaskError, match="frames in a .*-byte pickle exceed the limit"):
        get_task("nottingham", tmp_path).stream("train", seed=0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"refusing the bomb grew the peak RSS by {grown_mb:.0f} MB"


def test_shared_frames_within_the_frame_limit_are_refused_by_the_notes_per_byte_limit(tmp_path: Path) -> None:
    chord = list(range(21, 109))
    _dump(tmp_path / "Nottingham.pickle", {"train": [[chord] * 100_000], "valid": [], "test": []})
    with pytest.raises(TaskError, match="notes in a .*-byte pickle exceed the limit"):
        get_task("nottingham", tmp_path).stream("train", seed=0)


def test_an_unshared_pickle_of_realistic_size_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pieces = [[tuple(int(n) for n in rng.integers(21, 109, size=rng.integers(0, 5))) for _ in range(300)] for _ in range(40)]
    _dump(tmp_path / "Nottingham.pickle", {"train": pieces, "valid": pieces[:2], "test": pieces[:2]})
    assert len(get_task("nottingham", tmp_path).stream("train", seed=0)) == 40 * 300 - 1


@pytest.mark.parametrize("note", [10**400, -(10**400), float("nan"), float("inf")])
def test_absurd_numbers_are_refused_with_a_clear_error(tmp_path: Path, note: object) -> None:
    _dump(tmp_path / "Nottingham.pickle", {"train": [[(60,), (note,)]], "valid": [], "test": []})
    with pytest.raises(TaskError, match="is not a MIDI key"):
        get_task("nottingham", tmp_path).stream("train", seed=0)


def test_an_oversized_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archsearch.tasks import _music

    _dump(tmp_path / "Nottingham.pickle", SONGS)
    monkeypatch.setattr(_music, "MAX_PICKLE_BYTES", 10)
    with pytest.raises(TaskError, match="bytes is more than the 10 a music pickle may have"):
        get_task("nottingham", tmp_path).stream("train", seed=0)
