"""Hub resolution: explicit folder -> local cache -> network; offline failures are fast and clear."""

from __future__ import annotations

import importlib
import os
import socket
import time
from pathlib import Path

import pytest

from srpl_cli.backbones import _hub, get_backbone
from srpl_cli.errors import ModelUnavailableError


def closed_port_url() -> str:
    """An http URL on localhost where nothing listens: connection refused, instantly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("name", ["eres2netv2", "wavlm"])
def test_offline_empty_cache_fails_fast_with_instructions(name: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        get_backbone(name, device="cpu")
    assert time.monotonic() - start < 15
    msg = str(info.value)
    assert f"srpl download --model {name}" in msg and "--backbone dvector" in msg
    assert "\n" not in msg and info.value.exit_code == 5


@pytest.mark.parametrize("name", ["eres2netv2", "wavlm"])
def test_unreachable_hub_fails_fast_without_offline_flags(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online mode, but the hub cannot be reached: the probe answers at once instead of retry loops."""
    monkeypatch.delenv("SRPL_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    url = closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", url)
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="cannot reach 127.0.0.1") as info:
        get_backbone(name, device="cpu")
    assert time.monotonic() - start < 15
    assert "--backbone dvector" in str(info.value)


def test_probe_times_out_quickly() -> None:
    start = time.monotonic()
    # 192.0.2.0/24 is TEST-NET-1: never routed, so a connect can only time out (or fail at once)
    reason = _hub.probe("https://192.0.2.1", timeout=0.5)
    assert reason is not None and time.monotonic() - start < 2


def test_offline_flags() -> None:
    assert _hub.offline_requested("modelscope")  # SRPL_OFFLINE=1 from conftest
    os.environ.pop("SRPL_OFFLINE")
    try:
        assert _hub.offline_requested("huggingface")  # HF_HUB_OFFLINE=1
        assert not _hub.offline_requested("modelscope")
    finally:
        os.environ["SRPL_OFFLINE"] = "1"


def test_cache_dirs_follow_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert _hub.hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert _hub.hf_cache_dir() == tmp_path / "direct"
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    assert _hub.modelscope_cache_dir() == tmp_path / "ms"
    cands = _hub.modelscope_cache_candidates(_hub.HUB_MODELS["eres2netv2"])
    assert (
        tmp_path / "ms" / "models" / "iic--speech_eres2netv2_sv_zh-cn_16k-common" / "snapshots" / "v1.0.1"
        in cands
    )


def test_explicit_folder_checked(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="model folder not found"):
        _hub.resolve_model("wavlm", tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError, match="missing preprocessor_config.json"):
        _hub.resolve_model("wavlm", tmp_path)


def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SRPL_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(_hub, "probe", lambda url, timeout=_hub.PROBE_TIMEOUT_S: None)


def test_download_model_huggingface(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    _online(monkeypatch)
    calls = []

    def fake_snapshot_download(repo_id, *, revision, cache_dir, local_files_only, tqdm_class=None, **kw):
        calls.append((repo_id, revision, Path(cache_dir), local_files_only))
        if local_files_only:
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        snap = Path(cache_dir) / "models--microsoft--wavlm-base-plus-sv" / "snapshots" / "abc"
        snap.mkdir(parents=True)
        for f in ("config.json", "preprocessor_config.json", "pytorch_model.bin"):
            (snap / f).write_text("{}")
        if tqdm_class is not None:
            bar = tqdm_class(total=3)
            bar.update(3)
            bar.close()
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    seen = []
    path = _hub.download_model("wavlm", progress=lambda d, t: seen.append((d, t)))
    assert path.name == "abc" and (path / "pytorch_model.bin").is_file()
    assert calls[-1] == ("microsoft/wavlm-base-plus-sv", "main", _hub.hf_cache_dir(), False)
    assert seen[-1] == (3, 3)


def test_download_model_modelscope(monkeypatch: pytest.MonkeyPatch) -> None:
    ms = importlib.import_module("modelscope.hub.snapshot_download")

    _online(monkeypatch)

    def fake_snapshot_download(model_id, revision=None, cache_dir=None, local_files_only=False, **kw):
        assert (model_id, revision) == ("iic/speech_eres2netv2_sv_zh-cn_16k-common", "v1.0.1")
        assert not local_files_only
        snap = (
            Path(cache_dir) / "models" / "iic--speech_eres2netv2_sv_zh-cn_16k-common" / "snapshots" / revision
        )
        snap.mkdir(parents=True)
        for cb_cls in kw.get("progress_callbacks") or []:
            cb = cb_cls("pretrained_eres2netv2.ckpt", 10)
            cb.update(4)
            cb.update(6)
            cb.end()
        (snap / "pretrained_eres2netv2.ckpt").write_bytes(b"0" * 10)
        return str(snap)

    monkeypatch.setattr(ms, "snapshot_download", fake_snapshot_download)
    seen = []
    path = _hub.download_model("eres2netv2", progress=lambda d, t: seen.append((d, t)))
    assert path == _hub.modelscope_cache_candidates(_hub.HUB_MODELS["eres2netv2"])[2]
    assert seen == [(4, 10), (10, 10)]
    # now cached: offline resolution finds it without any hub call
    monkeypatch.setenv("SRPL_OFFLINE", "1")
    monkeypatch.setattr(ms, "snapshot_download", None)
    assert _hub.resolve_model("eres2netv2") == path


def test_download_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    ms = importlib.import_module("modelscope.hub.snapshot_download")

    _online(monkeypatch)

    def boom(*a, **kw):
        raise ConnectionError("[E1020] Connection failed: Max retries exceeded\nlong traceback text")

    monkeypatch.setattr(ms, "snapshot_download", boom)
    with pytest.raises(ModelUnavailableError, match="download of iic/speech_eres2netv2") as info:
        _hub.download_model("eres2netv2")
    assert "\n" not in str(info.value) and "srpl download --model eres2netv2" in str(info.value)


def test_download_refused_offline() -> None:
    with pytest.raises(ModelUnavailableError, match="SRPL_OFFLINE=1"):
        _hub.download_model("wavlm")
