"""Shared fixtures. Real data lives in ../shared/data beside the checkout and is never copied here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# one intra-op thread: tests use tiny tensors, and extra threads only fight over the CPU
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency; keep collection alive without it
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SRPL_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data not available: {path} is absent (tests need ../shared/data beside the checkout)"
        )
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real workspace or hub caches, and never try the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SRPL_HOME", str(home / "srpl"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(home / "modelscope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SRPL_OFFLINE", "1")
    monkeypatch.delenv("SRPL_WORKSPACE", raising=False)
