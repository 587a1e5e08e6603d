"""`srpl download --dataset`: snapshot, unpack, discover and register the authors' datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from srpl_cli.errors import DataError, ModelUnavailableError
from srpl_cli.hub import discover_datasets, download_datasets, snapshot_dataset_repo, unpack_archives
from srpl_cli.workspace import Workspace


def _emb_dataset(root: Path, speakers=(0, 1, 2), n=3) -> None:
    for split in ("emb_train", "emb_test"):
        for s in speakers:
            d = root / split / str(s)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                np.save(d / f"{i}.npy", np.ones((1, 4), np.float32) * (s + i))


def fake_release(repo: str, local_dir: Path, local_files_only: bool) -> Path:
    """Stands in for the hub: lays out what an undocumented release could look like."""
    local_dir.mkdir(parents=True, exist_ok=True)
    if repo.endswith("speakerRPL_dataset"):
        _emb_dataset(local_dir / "emb" / "qualcomm")
        _emb_dataset(local_dir / "emb" / "himia")
        (local_dir / "emb" / "himia" / "ClassifierAdapt_SRPL_.pth").write_bytes(b"x")
    else:
        src = local_dir / ".src" / "cnceleb"
        _emb_dataset(src)
        with zipfile.ZipFile(local_dir / "cnceleb.zip", "w") as zf:
            for f in src.rglob("*.npy"):
                zf.write(f, f.relative_to(src))
    return local_dir


def test_download_registers_every_dataset(tmp_path):
    ws = Workspace(tmp_path / "ws")
    found = download_datasets("all", ws, snapshot=fake_release)
    assert set(found) == {"qualcomm", "himia", "cnceleb"}
    assert found["himia"]["checkpoints"] and found["qualcomm"]["splits"] == ["emb_test", "emb_train"]
    assert set(ws.datasets()) == {"qualcomm", "himia", "cnceleb"}
    # one name only, and a clear error for a name the release does not have
    ws2 = Workspace(tmp_path / "ws2")
    assert set(download_datasets("himia", ws2, snapshot=fake_release)) == {"himia"}
    with pytest.raises(DataError, match="available: cnceleb, himia, qualcomm"):
        download_datasets("voxceleb", ws2, snapshot=fake_release)


def test_registered_dataset_evaluates_by_name(tmp_path):
    ws = tmp_path / "ws"
    download_datasets("qualcomm", Workspace(ws), snapshot=fake_release)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "srpl_cli",
            "evaluate",
            "--dataset",
            "qualcomm",
            "--method",
            "cosine",
            "--known",
            "0,1",
            "--workspace",
            str(ws),
            "--json",
            "--no-calibrate",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SRPL_NO_PROGRESS": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert "oscr" in json.loads(r.stdout)
    r = subprocess.run(
        [sys.executable, "-m", "srpl_cli", "evaluate", "--dataset", "nope", "--workspace", str(ws)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 3 and "srpl download --dataset nope" in r.stderr


def test_unpack_refuses_path_traversal(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside"):
        unpack_archives(tmp_path)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_unpack_tar_once(tmp_path):
    src = tmp_path / "src"
    _emb_dataset(src / "set")
    with tarfile.open(tmp_path / "pack.tar.gz", "w:gz") as tf:
        tf.add(src / "set", arcname="set")
    assert unpack_archives(tmp_path) == [tmp_path / "pack"]
    assert unpack_archives(tmp_path) == []  # marker: not unpacked twice
    assert "set" in discover_datasets(tmp_path / "pack")


def test_offline_without_copy_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="cannot download dataset repo"):
        snapshot_dataset_repo("zhiyongchen/speakerRPL_dataset", tmp_path / "dl")
    assert time.perf_counter() - t < 15


def test_offline_with_previous_copy_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = tmp_path / "dl"
    _emb_dataset(local / "x")
    assert snapshot_dataset_repo("zhiyongchen/speakerRPL_dataset", local) == local


def test_cli_download_usage_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "srpl_cli", "download"], capture_output=True, text=True)
    assert r.returncode == 2
    r = subprocess.run(
        [sys.executable, "-m", "srpl_cli", "download", "--model", "whisper"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "dvector" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "srpl_cli", "download", "--model", "wavlm"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "SRPL_OFFLINE": "1"},
        timeout=60,
    )
    assert r.returncode == 5 and "Traceback" not in r.stderr


def test_registry_paths_are_absolute_and_names_never_collide(tmp_path, monkeypatch):
    # a relative --workspace used to register relative paths: `evaluate --dataset` then failed elsewhere
    monkeypatch.chdir(tmp_path)
    found = download_datasets("all", Workspace("ws"), snapshot=fake_release)
    assert all(Path(e["path"]).is_absolute() for e in found.values())
    monkeypatch.chdir("/")
    assert all(Path(e["path"]).is_dir() for e in Workspace(tmp_path / "ws").datasets().values())
    # the same folder name three times: the third used to overwrite the second silently
    for parent in ("a", "b", "c"):
        _emb_dataset(tmp_path / "rel" / "x" / parent / "same", speakers=(0,), n=1)
    _emb_dataset(tmp_path / "rel" / "y" / "a" / "same", speakers=(0,), n=1)
    assert len(discover_datasets(tmp_path / "rel")) == 4


def test_unpack_tar_without_extraction_filters(tmp_path, monkeypatch):
    """Python < 3.10.12 (allowed by requires-python) has no tarfile filters: extractall(filter=) failed."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    src = tmp_path / "src"
    _emb_dataset(src / "set")
    with tarfile.open(tmp_path / "pack.tar", "w") as tf:
        tf.add(src / "set", arcname="set")
    assert unpack_archives(tmp_path) == [tmp_path / "pack"]
    assert "set" in discover_datasets(tmp_path / "pack")
    evil = tmp_path / "evil"
    evil.mkdir()
    with tarfile.open(evil / "e.tar", "w") as tf:
        tf.add(src / "set" / "emb_test" / "0" / "0.npy", arcname="../../outside.npy")
    with pytest.raises(DataError, match="outside"):
        unpack_archives(evil)


def test_macos_zip_debris_is_not_a_dataset(tmp_path):
    _emb_dataset(tmp_path / "qualcomm")
    _emb_dataset(tmp_path / "__MACOSX" / "qualcomm")  # AppleDouble mirror of a zip made on macOS
    found = discover_datasets(tmp_path)
    assert list(found) == ["qualcomm"] and found["qualcomm"]["path"] == str(tmp_path / "qualcomm")


def test_unreachable_network_says_so_in_one_line(tmp_path, monkeypatch):
    """No offline flag, but no network: the error names the network, not the hub client's error chain."""
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("SRPL_OFFLINE")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ModelUnavailableError) as info:
        snapshot_dataset_repo("zhiyongchen/speakerRPL_dataset", tmp_path / "dl")
    msg = str(info.value)
    assert "the network is unreachable (cannot reach 127.0.0.1" in msg and "\n" not in msg
    assert "Got:" not in msg and "ConnectError" not in msg
