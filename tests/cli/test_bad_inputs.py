"""The bad inputs of issue 10: each is one clear line and a non-zero exit, a warning, or a skip."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.cli.test_cli import srpl

SR = 16000


def one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(workspace, enroll dir): a d-vector model of 3 LibriSpeech speakers x 2 clips."""
    from tests.conftest import shared_path

    speakers = shared_path("librispeech-mini", "speakers")
    root = tmp_path_factory.mktemp("tuned")
    enroll = root / "enroll"
    for spk in sorted(p.name for p in speakers.iterdir())[:3]:
        (enroll / spk).mkdir(parents=True)
        for clip in sorted((speakers / spk).iterdir())[:2]:
            shutil.copy(clip, enroll / spk / clip.name)
    old = os.umask(0o022)
    try:
        r = srpl("tune", str(enroll), "--backbone", "dvector", "--workspace", str(root / "ws"))
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    return root / "ws", enroll


def test_identify_dev_zero_and_a_fifo_return_at_once(tuned, tmp_path: Path) -> None:
    ws, _ = tuned
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    r = srpl("identify", "/dev/zero", str(fifo), "--workspace", str(ws), timeout=120)
    assert r.returncode == 3, r.stderr
    assert "/dev/zero: not a regular file" in r.stderr and "x.wav: not a regular file" in r.stderr
    assert "Traceback" not in r.stderr


def test_model_file_has_the_usual_mode(tuned) -> None:
    ws, _ = tuned
    for f in (ws / "models" / "default").glob("v*/*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_workspace_that_is_a_file(tuned, tmp_path: Path) -> None:
    _, enroll = tuned
    not_a_dir = tmp_path / "ws"
    not_a_dir.write_text("x")
    r = srpl("identify", str(next(enroll.rglob("*.flac"))), "--workspace", str(not_a_dir))
    one_line_error(r, 6, "not a folder")


def test_current_pointer_with_non_utf8_bytes(tuned, tmp_path: Path) -> None:
    ws, enroll = tuned
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    (copy / "models" / "default" / "CURRENT").write_bytes(b"\xff\xfe\x00v0001\n")
    r = srpl("identify", str(next(enroll.rglob("*.flac"))), "--workspace", str(copy))
    one_line_error(r, 4, "CURRENT", "corrupt")


def test_nan_threshold_and_negative_min_speech_are_refused(tmp_path: Path) -> None:
    r = srpl("identify", "x.wav", "--threshold", "nan", "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 2 and "finite" in r.stderr and "Traceback" not in r.stderr
    r = srpl("tune", str(tmp_path), "--min-speech", "-1", "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 2 and "0 or more" in r.stderr
    assert not (tmp_path / "ws").exists()


def test_failing_tune_creates_no_workspace(tmp_path: Path) -> None:
    r = srpl("tune", str(tmp_path / "missing"), "--workspace", str(tmp_path / "ws"))
    one_line_error(r, 3, "missing")
    assert not (tmp_path / "ws").exists()


def test_read_only_workspace_fails_before_any_embedding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Run as root, chmod cannot make a folder read-only: the failing write is simulated.)"""
    import errno

    from srpl_cli import pipeline
    from srpl_cli.errors import WorkspaceError
    from srpl_cli.workspace import Workspace

    for spk in ("a", "b"):
        (tmp_path / "enroll" / spk).mkdir(parents=True)
        sf.write(tmp_path / "enroll" / spk / "1.wav", np.zeros(SR, np.float32), SR)
    Workspace(tmp_path / "ws").ensure()

    def read_only(*a: object, **k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    def never(*a: object, **k: object) -> None:
        raise AssertionError("embedding started on a workspace that cannot be written")

    monkeypatch.setattr("srpl_cli.workspace.tempfile.mkstemp", read_only)
    monkeypatch.setattr(pipeline, "load_backbone", never)
    with pytest.raises(WorkspaceError, match="Read-only"):
        pipeline.tune(tmp_path / "enroll", Workspace(tmp_path / "ws"), backbone="dvector")


def test_corrupt_mp3_is_one_clean_line(tmp_path: Path) -> None:
    """mpg123 prints to file descriptor 2 itself; libsndfile then blames "not a regular file"."""
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without mp3")
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\xff\xfb" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    code = (
        "import sys; from srpl_cli.audio import load_audio; from srpl_cli.errors import AudioError\n"
        f"try: load_audio({str(bad)!r})\nexcept AudioError as e: print(e)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr == ""
    assert "unreadable or corrupt audio" in r.stdout and "regular file" not in r.stdout


def test_ray_address_in_the_environment_leaves_the_local_engine_alone(tuned) -> None:
    """A $RAY_ADDRESS exported for other tools must not turn every local run into a usage error."""
    ws, enroll = tuned
    clip = next(p for p in sorted(next(iter(sorted(enroll.iterdir()))).iterdir()))
    r = srpl("identify", str(clip), "--workspace", str(ws), "--json", env={"RAY_ADDRESS": "auto"})
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("flag", ["--max-upload-mb", "--max-clip-seconds", "--timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_serve_limits_must_be_finite_and_positive(flag: str, value: str, tmp_path: Path) -> None:
    r = srpl("serve", "--workspace", str(tmp_path / "ws"), flag, value)
    one_line_error(r, 2, flag)
