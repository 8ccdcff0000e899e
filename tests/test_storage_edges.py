"""Databases met by careless users: read-only media, a damaged file, non-finite inputs."""

from __future__ import annotations

import hashlib
import math
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

import archsearch
from archsearch.cli import main
from archsearch.errors import HyperParameterError, StorageError
from archsearch.search import preset
from archsearch.storage import open_storage
from archsearch.train import MAX_PARAMS, HyperParams


def _make_db(path: Path) -> str:
    """A real archsearch database with one search and the GRU, written and closed (checkpointed)."""
    url = f"sqlite:///{path}"
    storage = open_storage(url)
    sid = storage.create_search("quick", preset("quick").to_dict(), 0).id
    gru = archsearch.seed("gru")
    storage.add_architecture(sid, name="gru", graph_json=gru.to_json(), structural_hash=gru.structural_hash(),
                             fingerprint=None, parent_id=None, mutation=None, origin="seed", stage="complete")
    storage.close()
    return url


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def read_only_folder(tmp_path):
    """(folder, remount): a tmpfs mounted at a fresh folder; ``remount()`` makes it read-only (needs root)."""
    folder = tmp_path / "media"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): read-only media not testable")

    def remount() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)

    try:
        yield folder, remount
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # lazy: open handles may remain


def test_read_only_commands_work_on_read_only_media(read_only_folder, capsys) -> None:
    read_only_folder, remount = read_only_folder
    url = _make_db(read_only_folder / "a.db")
    with sqlite3.connect(read_only_folder / "a.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    remount()
    with pytest.raises(OSError):
        (read_only_folder / "probe").write_text("x")
    assert main(["leaderboard", "--db", url]) == 0
    assert "no architecture has results" in capsys.readouterr().out
    assert main(["show", "gru", "--db", url]) == 0
    assert "lineage" in capsys.readouterr().out
    reader = open_storage(url, read_only=True)
    assert reader.list_searches()[0].name == "quick"
    reader.close()


def test_read_only_media_with_changes_left_in_the_wal_says_so(read_only_folder, capsys) -> None:
    read_only_folder, remount = read_only_folder
    path = read_only_folder / "a.db"
    url = _make_db(path)
    writer = sqlite3.connect(path)  # a crashed writer: its last commit only in the -wal file
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO archsearch_meta (key, value) VALUES ('late', 'x')")
    writer.commit()
    image = read_only_folder / "copy"
    image.mkdir()
    shutil.copy(path, image / "a.db")
    shutil.copy(str(path) + "-wal", image / "a.db-wal")
    writer.close()
    remount()
    assert main(["leaderboard", "--db", f"sqlite:///{image / 'a.db'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "still holds changes" in err[0] and "copy the .db and -wal files" in err[0]


def test_search_refuses_a_database_with_a_missing_table_untouched(tmp_path, capsys) -> None:
    path = tmp_path / "d.db"
    _make_db(path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("DROP TABLE evaluations")
    conn.close()
    before = _digest(path)
    argv = ["search", "--db", f"sqlite:///{path}", "--max-evaluations", "1", "--no-live"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "table(s) evaluations missing" in err[0] and "left untouched" in err[0]
    assert _digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.db"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    conn.close()
    with pytest.raises(StorageError, match="missing"):
        open_storage(f"sqlite:///{path}", read_only=True)


@pytest.mark.parametrize("field,value", [("lr", math.inf), ("init_scale", math.nan), ("max_grad_norm", -math.inf)])
def test_non_finite_hyper_parameters_are_refused(field, value, tmp_path) -> None:
    hp = HyperParams(lr=1.0, init_scale=1.0, max_grad_norm=5.0, layers=1, params=250_000).to_dict()
    hp[field] = value
    with pytest.raises(HyperParameterError, match="finite"):
        HyperParams.from_dict(hp).check((250_000,), allow_any=True)
    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}")
    sid = storage.create_search("s", {}, 0).id
    gru = archsearch.seed("gru")
    arch, _ = storage.add_architecture(sid, name="gru", graph_json=gru.to_json(), structural_hash="h",
                                       fingerprint=None, parent_id=None, mutation=None, origin="seed", stage="complete")
    with pytest.raises(StorageError, match="hyper-parameters"):
        storage.add_evaluation(arch.id, "xml", hp, "init")
    assert storage.evaluations() == []  # nothing stored as null


def test_huge_budgets_are_refused_even_with_allow_any() -> None:
    hp = HyperParams(lr=1.0, init_scale=1.0, max_grad_norm=5.0, layers=1, params=MAX_PARAMS + 1)
    with pytest.raises(HyperParameterError, match="params at most"):
        hp.check((250_000,), allow_any=True)
    hp = HyperParams(lr=1.0, init_scale=1.0, max_grad_norm=5.0, layers=1, params=MAX_PARAMS)
    hp.check((250_000,), allow_any=True)
