from __future__ import annotations

import json
import os

import numpy as np
import pytest

from srpl_cli.errors import DataError, StateError, WorkspaceError
from srpl_cli.workspace import SCHEMA_VERSION, Workspace, default_root


def test_default_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SRPL_WORKSPACE", raising=False)
    monkeypatch.setenv("SRPL_HOME", str(tmp_path / "h"))
    assert default_root() == tmp_path / "h"
    monkeypatch.setenv("SRPL_WORKSPACE", str(tmp_path / "w"))
    assert default_root() == tmp_path / "w"
    monkeypatch.delenv("SRPL_WORKSPACE")
    monkeypatch.delenv("SRPL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_root() == tmp_path / "x" / "srpl"


def test_creating_object_touches_nothing(tmp_path):
    Workspace(tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_manifest_schema(tmp_path):
    ws = Workspace(tmp_path).ensure()
    info = json.loads((tmp_path / "manifest.json").read_text())
    assert info["schema_version"] == SCHEMA_VERSION
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(WorkspaceError, match="newer"):
        ws.ensure()
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(WorkspaceError, match="not a valid"):
        ws.ensure()


def test_profiles_round_trip_and_replace(tmp_path):
    ws = Workspace(tmp_path)
    with ws.lock():
        ws.save_profile("dvector", "alice", np.ones((3, 4)), {"clips": ["a", "b", "c"]})
        ws.save_profile("dvector", "bob", np.zeros((2, 4)), {"clips": ["d", "e"]})
        ws.save_profile("dvector", "alice", np.full((2, 4), 2.0), {"clips": ["x", "y"]})
    profiles = ws.load_profiles("dvector")
    assert sorted(profiles) == ["alice", "bob"]
    X, info = profiles["alice"]
    assert X.shape == (2, 4) and X.dtype == np.float32 and info["clips"] == ["x", "y"]
    assert ws.profile_backbones() == ["dvector"]
    assert not any(ws.tmp_dir.iterdir())
    assert not [p for p in (tmp_path / "profiles" / "dvector").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 200])
def test_unsafe_names_refused(tmp_path, name):
    ws = Workspace(tmp_path)
    with pytest.raises(DataError, match="invalid"):
        ws.profile_dir("dvector", name)


def test_model_versions_and_current(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(StateError, match="no tuned model") as exc:
        ws.current_model()
    assert "srpl tune" in exc.value.hint
    with ws.lock():
        for i in range(2):
            with ws.building("model") as build:
                (build / "meta.json").write_text(json.dumps({"i": i}))
                mv = ws.commit_model(build)
    assert mv.version == "v0002"
    assert ws.model_versions() == ["v0001", "v0002"]
    assert ws.current_model().version == "v0002"
    with ws.lock():
        ws.set_current("default", "v0001")
    assert ws.current_model().version == "v0001"
    with pytest.raises(StateError):
        ws.current_model(version="v0009")


def test_failed_build_leaves_no_debris_and_keeps_current(tmp_path):
    ws = Workspace(tmp_path)
    with ws.lock():
        with ws.building("model") as build:
            (build / "meta.json").write_text("{}")
            ws.commit_model(build)
    with pytest.raises(RuntimeError):
        with ws.lock():
            with ws.building("model") as build:
                (build / "meta.json").write_text("{}")
                raise RuntimeError("killed mid-way")
    assert ws.current_model().version == "v0001"
    assert not any(ws.tmp_dir.iterdir())


def test_stale_tmp_from_dead_process_is_cleaned(tmp_path):
    ws = Workspace(tmp_path).ensure()
    # a pid that cannot be alive: build dirs are named <pid>-<label>-<uuid>
    dead = ws.tmp_dir / f"{2**22 + 12345}-model-deadbeef"
    dead.mkdir()
    live = ws.tmp_dir / f"{os.getpid()}-model-cafecafe"
    live.mkdir()
    with ws.lock():
        pass
    assert not dead.exists() and live.exists()


def test_lock_timeout_is_a_clear_error(tmp_path):
    from filelock import FileLock

    ws = Workspace(tmp_path, lock_timeout=0.2).ensure()
    holder = FileLock(str(tmp_path / ".lock"))
    holder.acquire()
    try:
        with pytest.raises(WorkspaceError, match="busy"):
            with ws.lock():
                pass
    finally:
        holder.release()


def test_dataset_registry(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.datasets() == {}
    with ws.lock():
        ws.register_datasets({"a": {"path": "/x"}})
        ws.register_datasets({"b": {"path": "/y"}})
    assert sorted(ws.datasets()) == ["a", "b"]


def test_unwritable_workspace_is_a_workspace_error(tmp_path, monkeypatch):
    import filelock

    ws = Workspace(tmp_path / "ws").ensure()

    def refuse(self, *a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    with pytest.raises(WorkspaceError, match="cannot write to workspace"):
        with ws.lock():
            pass
    monkeypatch.undo()
    # I/O failing under the lock (disk full, ...) is a workspace error too, not an internal error
    with pytest.raises(WorkspaceError, match="No space left"):
        with ws.lock():
            raise OSError(28, "No space left on device")


def test_embedding_cache_write_failure_is_not_fatal(tmp_path):
    """identify/evaluate only read a workspace: a read-only cache must not stop them."""
    from srpl_cli.audio import AudioQuality
    from srpl_cli.embeddings import EmbeddingCache

    (tmp_path / "file").write_text("")
    cache = EmbeddingCache(tmp_path / "file")  # a file where the cache folder should be: mkdir fails
    quality = AudioQuality(duration_s=1.0, speech_s=1.0, speech_ratio=1.0, clipped_ratio=0.0, rms_dbfs=-20.0)
    assert cache.put("ab" * 32, "bb", np.zeros(4, np.float32), quality) is None


def test_model_versions_sort_by_number(tmp_path):
    ws = Workspace(tmp_path).ensure()
    for v in ("v9999", "v10000", "v0002"):
        (ws.models_dir / "m" / v).mkdir(parents=True)
    assert ws.model_versions("m") == ["v0002", "v9999", "v10000"]


def test_tmp_entry_vanishing_during_cleanup_is_fine(tmp_path, monkeypatch):
    """A reader (evaluate --cs-my) removes its own tmp/ build while a writer cleans tmp/."""
    from pathlib import Path

    ws = Workspace(tmp_path).ensure()
    (ws.tmp_dir / f"{os.getpid()}-synth-fold0-abcd").mkdir()
    real_stat = Path.stat

    def vanished(self, *a, **k):
        if self.name.endswith("abcd"):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_stat(self, *a, **k)

    monkeypatch.setattr(Path, "stat", vanished)
    with ws.lock():  # used to fail the writer with FileNotFoundError
        pass


def test_info_walks_the_workspace_and_its_cache_once(tmp_path, monkeypatch):
    """`srpl info` sizes the workspace and its embedding cache (the bulk of it) in one walk."""
    import os

    from srpl_cli import diagnostics

    ws = Workspace(tmp_path / "ws").ensure()
    for i in range(5):
        entry = ws.cache_dir / "dvector_x" / f"{i:02d}" / f"{i}.npy"
        entry.parent.mkdir(parents=True)
        entry.write_bytes(b"x" * (100 + i))
    (ws.root / "other.bin").write_bytes(b"y" * 7)
    seen: list[str] = []
    real = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: seen.append(str(p)) or real(p, *a, **k))
    info = diagnostics.gather(ws)
    cache = next(c for c in info.caches if c.name == "embeddings")
    assert (cache.size_bytes, cache.entries) == (sum(100 + i for i in range(5)), 5)
    assert info.workspace.size_bytes == cache.size_bytes + 7 + (ws.root / "manifest.json").stat().st_size
    cache_files = [p for p in seen if p.startswith(str(ws.cache_dir)) and p.endswith(".npy")]
    assert len(cache_files) == len(set(cache_files)) == 5
