"""Where hub backbones come from: an explicit folder, then the local cache, then the network.

Caches are the hubs' own (``HF_HOME`` / ``HF_HUB_CACHE`` for Hugging Face, ``MODELSCOPE_CACHE`` for
ModelScope), resolved from the environment at call time (the hub libraries read it once at import, which
would pin a stale location in long-lived processes and tests). Offline (``SRPL_OFFLINE=1``,
``HF_HUB_OFFLINE=1`` for Hugging Face, or ``local_files_only=True``) never touches the network. Before
any network call a short TCP probe of the hub host (3 s) turns "no network" into an immediate
``ModelUnavailableError`` instead of the hub clients' retry loops (ModelScope retries for ~20 s).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from srpl_cli.errors import ModelUnavailableError

Progress = Callable[[int, int], None]
PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HubModel:
    """A registered hub model: which hub, repo and revision, and the files a usable snapshot has.

    Each entry of ``required`` is a file name, or alternatives separated by ``|`` (any one suffices).
    """

    name: str
    hub: str  # "huggingface" | "modelscope"
    repo_id: str
    revision: str
    required: tuple[str, ...]
    allow_patterns: tuple[str, ...]


HUB_MODELS: dict[str, HubModel] = {
    "eres2netv2": HubModel(
        name="eres2netv2",
        hub="modelscope",
        repo_id="iic/speech_eres2netv2_sv_zh-cn_16k-common",
        revision="v1.0.1",
        required=("pretrained_eres2netv2.ckpt",),
        allow_patterns=("configuration.json", "pretrained_eres2netv2.ckpt", "README.md"),
    ),
    "wavlm": HubModel(
        name="wavlm",
        hub="huggingface",
        repo_id="microsoft/wavlm-base-plus-sv",
        revision="main",
        required=("config.json", "preprocessor_config.json", "model.safetensors|pytorch_model.bin"),
        allow_patterns=("*.json", "model.safetensors", "pytorch_model.bin", "*.md"),
    ),
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_requested(hub: str) -> bool:
    """``SRPL_OFFLINE`` for every hub; ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` for Hugging Face."""
    if _flag("SRPL_OFFLINE"):
        return True
    return hub == "huggingface" and (_flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub computes it, but from the current environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def modelscope_cache_dir() -> Path:
    """The ModelScope cache root (``MODELSCOPE_CACHE``, default ``~/.cache/modelscope``)."""
    env = os.environ.get("MODELSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelscope"


def modelscope_cache_candidates(model: HubModel, cache: Path | None = None) -> list[Path]:
    """Folders where modelscope (old and new SDKs) keeps a snapshot, in the order modelscope probes them.

    New layout: ``<cache>/models/<owner>--<name>/snapshots/<revision>/``; older SDKs used
    ``<cache>/models/<owner>/<name with . as ___>/`` (also under ``hub/``) and ``<cache>/<owner>/<name>/``.
    """
    base = cache or modelscope_cache_dir()
    owner, name = model.repo_id.split("/", 1)
    safe = name.replace(".", "___")
    return [
        base / "models" / owner / safe,
        base / "hub" / "models" / owner / safe,
        base / "models" / f"{owner}--{name}" / "snapshots" / model.revision,
        base / owner / name,
        base / owner / safe,
        base / "hub" / owner / name,
        base / "hub" / owner / safe,
    ]


def missing_files(folder: Path, model: HubModel) -> list[str]:
    """Required files absent from ``folder`` (empty list: the folder is a usable snapshot)."""
    missing = []
    for entry in model.required:
        if not any((folder / alt).is_file() for alt in entry.split("|")):
            missing.append(entry.replace("|", " or "))
    return missing


def hub_model(name: str) -> HubModel:
    try:
        return HUB_MODELS[name]
    except KeyError:
        raise ModelUnavailableError(
            f"unknown hub model '{name}'; choose one of: {', '.join(HUB_MODELS)}"
        ) from None


def unavailable(name: str, reason: str) -> ModelUnavailableError:
    """The one-line error for a model we cannot get, naming both ways out."""
    return ModelUnavailableError(
        f"model '{name}' is not available: {reason}; run `srpl download --model {name}` while online, "
        "or use `--backbone dvector` (needs no download)"
    )


def _not_downloadable(name: str, why: str, then: str) -> ModelUnavailableError:
    """Download impossible: say why first, then what works offline, then how to get the model later."""
    return ModelUnavailableError(
        f"cannot download model '{name}': {why} and no copy is cached; offline, `--backbone dvector` works "
        f"(its weights ship with srpl); {then} `srpl download --model {name}`"
    )


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Open a TCP connection to ``url``'s host; ``None`` when reachable, else the reason.

    DNS lookups have no timeout of their own, so the whole probe runs in a daemon thread.
    """
    parsed = urlparse(url)
    host = parsed.hostname or url
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(f"cannot reach {host} ({exc.strerror or type(exc).__name__})")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        return f"cannot reach {host} (no answer within {timeout:g} s)"
    return result[0]


def hub_endpoint(hub: str) -> str:
    if hub == "huggingface":
        return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return os.environ.get("MODELSCOPE_ENDPOINT") or "https://modelscope.cn"


def cached_model_dir(name: str) -> Path | None:
    """The cached snapshot of ``name`` if a usable one is on disk (never touches the network)."""
    model = hub_model(name)
    if model.hub == "modelscope":
        # direct look-up first: cheap, and avoids importing the modelscope SDK on every start
        for folder in modelscope_cache_candidates(model):
            if folder.is_dir() and not missing_files(folder, model):
                return folder
        found = _snapshot(model, local_files_only=True)
    else:
        found = _snapshot(model, local_files_only=True)
    if found is not None and not missing_files(found, model):
        return found
    return None


def _snapshot(model: HubModel, *, local_files_only: bool, progress: Progress | None = None) -> Path | None:
    """Call the hub's ``snapshot_download``; with ``local_files_only`` a cache miss returns ``None``."""
    if model.hub == "huggingface":
        from huggingface_hub import snapshot_download as hf_snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        kwargs: dict[str, Any] = {}
        if progress is not None:
            kwargs["tqdm_class"] = _tqdm_bridge(progress)
        try:
            path = hf_snapshot_download(
                model.repo_id,
                revision=model.revision,
                cache_dir=hf_cache_dir(),
                local_files_only=local_files_only,
                allow_patterns=list(model.allow_patterns),
                etag_timeout=10,
                **kwargs,
            )
        except LocalEntryNotFoundError:
            if local_files_only:
                return None
            raise
        return Path(path)

    from modelscope.hub.snapshot_download import snapshot_download as ms_snapshot_download

    callbacks = [_modelscope_callback(progress)] if progress is not None else None
    try:
        path = ms_snapshot_download(
            model.repo_id,
            revision=model.revision,
            cache_dir=str(modelscope_cache_dir()),
            local_files_only=local_files_only,
            allow_patterns=list(model.allow_patterns),
            progress_callbacks=callbacks,
        )
    except Exception:
        if local_files_only:  # modelscope_hub.errors.CacheNotFound and friends: nothing cached
            return None
        raise
    return Path(path)


def resolve_model(
    name: str, source: str | Path | None = None, *, local_files_only: bool | None = None
) -> Path:
    """Folder holding model ``name``: ``source`` if given, else the local cache, else a download.

    Raises ``ModelUnavailableError`` (naming ``srpl download`` and ``--backbone dvector``) when the model
    is neither cached nor reachable; offline that happens without any network traffic.
    """
    model = hub_model(name)
    if source is not None:
        folder = Path(source).expanduser()
        if folder.is_file():
            folder = folder.parent
        if not folder.is_dir():
            raise ModelUnavailableError(f"{source}: model folder not found")
        missing = missing_files(folder, model)
        if missing:
            raise ModelUnavailableError(
                f"{source}: not a '{name}' model folder (missing {', '.join(missing)})"
            )
        return folder
    cached = cached_model_dir(name)
    if cached is not None:
        return cached
    offline = offline_requested(model.hub) if local_files_only is None else local_files_only
    if offline:
        where = hf_cache_dir() if model.hub == "huggingface" else modelscope_cache_dir()
        raise unavailable(name, f"not in the local cache ({where}) and offline mode is on")
    return download_model(name)


def download_model(name: str, progress: Progress | None = None) -> Path:
    """Fetch (or finish fetching) model ``name`` into its hub's cache and return the snapshot folder.

    Downloads resume where they stopped (both hub clients keep partial files). ``progress(done, total)``
    is called as bytes (ModelScope) or files (Hugging Face) arrive.
    """
    model = hub_model(name)
    if offline_requested(model.hub):
        cached = cached_model_dir(name)
        if cached is not None:
            return cached
        flag = "SRPL_OFFLINE" if _flag("SRPL_OFFLINE") else "HF_HUB_OFFLINE"
        raise _not_downloadable(name, f"offline mode is on ({flag}=1)", f"unset {flag} and run")
    reason = probe(hub_endpoint(model.hub))
    if reason is not None:
        cached = cached_model_dir(name)
        if cached is not None:
            return cached
        raise _not_downloadable(name, f"the network is unreachable ({reason})", "once online, run")
    try:
        folder = _snapshot(model, local_files_only=False, progress=progress)
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise unavailable(name, f"download of {model.repo_id}@{model.revision} failed ({detail})") from None
    if folder is None:
        raise unavailable(name, f"download of {model.repo_id}@{model.revision} returned nothing")
    missing = missing_files(folder, model)
    if missing:
        raise unavailable(name, f"downloaded snapshot {folder} lacks {', '.join(missing)}")
    return folder


def _tqdm_bridge(progress: Progress) -> type:
    """A tqdm subclass that reports to ``progress(done, total)`` and draws nothing."""
    from tqdm.auto import tqdm

    class _Bridge(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            progress(int(self.n), int(self.total or 0))
            return out

        def close(self) -> None:
            fp = self.fp
            super().close()
            fp.close()

    return _Bridge


def _modelscope_callback(progress: Progress) -> type:
    """A modelscope ``ProgressCallback`` class summing bytes over all files into ``progress``."""
    from modelscope.hub.callback import ProgressCallback

    state = {"done": 0, "total": 0}
    lock = threading.Lock()

    class _Callback(ProgressCallback):  # type: ignore[misc]
        def __init__(self, filename: str, file_size: int) -> None:
            super().__init__(filename, file_size)
            with lock:
                state["total"] += max(0, int(file_size))

        def update(self, size: int) -> None:
            with lock:
                state["done"] += int(size)
                done, total = state["done"], state["total"]
            progress(done, total)

        def end(self) -> None:
            pass

    return _Callback


def file_digest(path: Path) -> str:
    """sha256 of a weights file; free for Hugging Face cache files (their blob is named by it)."""
    import hashlib
    import re

    target = Path(os.path.realpath(path))
    if target != Path(path).absolute() and re.fullmatch(r"[0-9a-f]{64}", target.name):
        return target.name
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
