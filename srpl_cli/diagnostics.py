"""`srpl info`: what this installation can do right now, gathered without touching the network.

Versions of srpl and the libraries it leans on, the compute device, the workspace (where, how big,
what it holds) and, per backbone, whether it loads offline and where its weights are. Used to answer
"why does this not work here" before filing a bug, so nothing here may fail: every probe reports its
own problem as text.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from srpl_cli._version import __version__
from srpl_cli.workspace import Workspace

#: distributions whose versions matter when reporting a problem
LIBRARIES = ("torch", "torchaudio", "transformers", "numpy", "modelscope", "huggingface-hub", "resemblyzer")


@dataclass
class BackboneStatus:
    name: str
    offline: bool
    weights: str | None
    note: str


@dataclass
class CacheStatus:
    name: str
    path: str
    exists: bool
    size_bytes: int
    entries: int


@dataclass
class WorkspaceStatus:
    path: str
    exists: bool
    size_bytes: int
    models: dict[str, str | None]
    speakers: dict[str, int]
    datasets: list[str]


@dataclass
class Info:
    srpl: str
    python: str
    platform: str
    libraries: dict[str, str | None]
    device: str
    workspace: WorkspaceStatus
    backbones: list[BackboneStatus]
    caches: list[CacheStatus] = field(default_factory=list)
    offline_flags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dir_stats(
    path: Path, parts: tuple[Path, ...] = ()
) -> tuple[tuple[int, int], dict[Path, tuple[int, int]]]:
    """(bytes, files) under ``path``, and the same for each folder of ``parts`` inside it, in one walk;
    symlinks are not followed (HF snapshots link into blobs/)."""
    size = n = 0
    sub = {p: [0, 0] for p in parts}
    if not path.is_dir():
        return (0, 0), {p: (0, 0) for p in parts}
    for root, _dirs, files in os.walk(path):
        here = Path(root)
        counters = [c for p, c in sub.items() if here == p or p in here.parents]
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            size += st.st_size
            n += 1
            for c in counters:
                c[0] += st.st_size
                c[1] += 1
    return (size, n), {p: (c[0], c[1]) for p, c in sub.items()}


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def compute_device() -> str:
    """What the backbones will run on: the first CUDA device, else the CPU (with torch's thread count)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        return f"unknown (torch not importable: {exc})"
    if torch.cuda.is_available():
        return f"cuda:0 ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    return f"cpu ({torch.get_num_threads()} threads)"


def backbone_status() -> list[BackboneStatus]:
    """Per registered backbone: usable without the network now, and where its weights are."""
    from srpl_cli.backbones import BACKBONES, _hub

    out = []
    for name in BACKBONES:
        if name == "dvector":
            from srpl_cli.backbones.dvector import packaged_weights

            path = packaged_weights()
            out.append(
                BackboneStatus(
                    name,
                    path is not None,
                    str(path) if path else None,
                    "ships with the resemblyzer wheel" if path else "pip install resemblyzer",
                )
            )
            continue
        try:
            folder = _hub.cached_model_dir(name)
        except Exception as exc:  # noqa: BLE001 - a broken hub SDK must not break `srpl info`
            out.append(BackboneStatus(name, False, None, f"cache check failed: {type(exc).__name__}: {exc}"))
            continue
        hub = _hub.hub_model(name).hub
        if folder is not None:
            out.append(BackboneStatus(name, True, str(folder), f"cached ({hub})"))
        else:
            out.append(BackboneStatus(name, False, None, f"not cached; run: srpl download --model {name}"))
    return out


def workspace_status(ws: Workspace, size_bytes: int | None = None) -> WorkspaceStatus:
    """What the workspace holds; ``size_bytes``: its size when the caller has walked it already."""
    from srpl_cli.management import list_models

    models: dict[str, str | None] = {}
    speakers: dict[str, int] = {}
    datasets: list[str] = []
    if ws.root.is_dir():
        try:
            models = {m.name: m.current for m in list_models(ws)}
        except Exception:  # noqa: BLE001 - a damaged models/ folder is shown as empty, not a crash
            models = {}
        if ws.profiles_dir.is_dir():
            for d in sorted(ws.profiles_dir.iterdir()):
                if d.is_dir():
                    speakers[d.name] = sum(1 for p in d.iterdir() if (p / "profile.json").is_file())
        try:
            datasets = sorted(ws.datasets())
        except Exception:  # noqa: BLE001
            datasets = []
    if size_bytes is None:
        size_bytes = dir_stats(ws.root)[0][0]
    return WorkspaceStatus(str(ws.root), ws.root.is_dir(), size_bytes, models, speakers, datasets)


def gather(workspace: Workspace | None = None) -> Info:
    """Everything `srpl info` shows (reads only; never downloads)."""
    from srpl_cli.backbones import _hub

    ws = workspace or Workspace()
    # one walk of the workspace gives its size and the embedding cache's (the bulk of it)
    (ws_size, _), inside = dir_stats(ws.root, (ws.cache_dir,))
    caches = [CacheStatus("embeddings", str(ws.cache_dir), ws.cache_dir.is_dir(), *inside[ws.cache_dir])]
    for label, path in (("huggingface", _hub.hf_cache_dir()), ("modelscope", _hub.modelscope_cache_dir())):
        (size, n), _ = dir_stats(path)
        caches.append(CacheStatus(label, str(path), path.is_dir(), size, n))
    flags = {
        k: os.environ[k]
        for k in ("SRPL_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SRPL_WORKSPACE", "SRPL_HOME")
        if os.environ.get(k)
    }
    return Info(
        __version__,
        sys.version.split()[0],
        platform.platform(terse=True),
        library_versions(),
        compute_device(),
        workspace_status(ws, ws_size),
        backbone_status(),
        caches,
        flags,
    )
