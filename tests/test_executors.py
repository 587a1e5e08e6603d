"""Executors: the local default and Ray Data (`--engine ray`), on real clips with the d-vector backbone.

The Ray tests share one local Ray instance (2 CPUs, 150 MB object store, no dashboard), started once for
the module and shut down at its end; they skip when ray is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from srpl_cli.errors import UsageError
from tests.conftest import shared_path


def _clips(n: int) -> list:
    root = shared_path("librispeech-mini", "speakers")
    return sorted(root.glob("*/*.flac"))[:n]


def test_core_never_imports_ray() -> None:
    code = (
        "import sys, srpl_cli.cli, srpl_cli.pipeline, srpl_cli.embeddings, srpl_cli.executors, srpl_cli.evaluation; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_engine_flags_are_checked_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from srpl_cli.executors import LocalExecutor, make_executor

    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(UsageError, match="unknown engine"):
        make_executor("spark")
    with pytest.raises(UsageError, match="only apply to --engine ray"):
        make_executor("local", workers=2)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(UsageError, match="not installed") as info:
        make_executor("ray")
    assert "srpl-cli[ray]" in (info.value.hint or "")


def test_cli_engine_ray_without_ray_is_one_line(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    code = (
        "import sys; sys.modules['ray'] = None; from srpl_cli.cli import main; "
        f"sys.argv = ['srpl', 'enroll', {str(tmp_path)!r}, '--engine', 'ray', '-w', {str(tmp_path / 'ws')!r}]; "
        "main()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == "error: --engine ray needs Ray Data, which is not installed"
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray not installed (pip install 'srpl-cli[ray]')")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_embeddings_identical_to_local_and_resumable(local_ray, tmp_path) -> None:
    from srpl_cli.backbones import get_backbone
    from srpl_cli.embeddings import EmbeddingCache, extract_embeddings
    from srpl_cli.executors import RayExecutor

    clips = _clips(12)
    shutil.copy(clips[0], tmp_path / "same_bytes.flac")
    (tmp_path / "broken.flac").write_bytes(b"not audio")
    first = clips[:8] + [tmp_path / "same_bytes.flac", tmp_path / "broken.flac"]
    bb = get_backbone("dvector", device="cpu")
    local = extract_embeddings(clips + [tmp_path / "same_bytes.flac", tmp_path / "broken.flac"], bb)

    cache = EmbeddingCache(tmp_path / "cache")
    part = extract_embeddings(first, bb, cache=cache, executor=RayExecutor(workers=2))
    assert part.n_embedded == 8 and [str(p) for p, _ in part.problems] == [str(tmp_path / "broken.flac")]
    # interrupted after 8 clips: the rerun on all of them embeds only the 4 missing ones
    done = extract_embeddings(
        clips + [tmp_path / "same_bytes.flac", tmp_path / "broken.flac"],
        bb,
        cache=cache,
        executor=RayExecutor(workers=2),
    )
    assert done.n_cached == 9 and done.n_embedded == 4
    assert done.paths_ok == local.paths_ok and done.problems == local.problems
    np.testing.assert_array_equal(done.embeddings, local.embeddings)  # bit for bit
    assert done.qualities == local.qualities


@pytest.mark.slow
def test_cli_enroll_engine_ray_fills_the_same_cache(local_ray, tmp_path) -> None:
    from typer.testing import CliRunner

    from srpl_cli.cli import app

    data = tmp_path / "people"
    for clip in _clips(30)[::5]:  # 6 clips over a few speakers
        (data / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, data / clip.parent.name / clip.name)
    ws_ray, ws_local = tmp_path / "ws_ray", tmp_path / "ws_local"
    args = ["enroll", str(data), "--backbone", "dvector", "--json"]
    res = CliRunner().invoke(app, [*args, "-w", str(ws_ray), "--engine", "ray", "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert CliRunner().invoke(app, [*args, "-w", str(ws_local)]).exit_code == 0
    ray_files = sorted(p.relative_to(ws_ray) for p in (ws_ray / "cache").rglob("*.npy"))
    local_files = sorted(p.relative_to(ws_local) for p in (ws_local / "cache").rglob("*.npy"))
    assert ray_files == local_files and len(ray_files) == 6
    for rel in ray_files:
        np.testing.assert_array_equal(np.load(ws_ray / rel), np.load(ws_local / rel))
