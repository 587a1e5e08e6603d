"""The local workspace: the only module that writes srpl's state to disk.

Layout (documented in docs/workspace.md)::

    <root>/
      manifest.json                  schema version, srpl version, created time
      .lock                          writers hold this file lock for the whole write
      cache/embeddings/...           embedding cache (srpl_cli.embeddings.EmbeddingCache)
      profiles/<backbone>/<speaker>/ profile.json + embeddings.npy (one enrolled speaker)
      models/<name>/v0001/           one tuned model version: model.safetensors, meta.json, tune.json
      models/<name>/CURRENT          the version in use (moved last, atomically)
      pool/<backbone>/               unlabeled pool: embeddings.npy + pool.json (srpl_cli.pool)
      datasets/registry.json         downloaded embedding datasets, by name
      downloads/                     hub snapshots of datasets
      tmp/                           builds in progress; debris from a killed run is removed later

Every file is written to a temp file and renamed into place; every directory (a profile, a model
version) is built under ``tmp/`` and renamed when complete, so a reader sees the old state or the
new one and a killed command never leaves half a model in use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli._io import atomic_write_text
from srpl_cli._version import __version__
from srpl_cli.errors import DataError, StateError, WorkspaceError

SCHEMA_VERSION = 1
DEFAULT_MODEL = "default"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: tmp/ entries older than this are debris from a killed run (live builds are far younger)
_STALE_TMP_S = 6 * 3600


def default_root() -> Path:
    """``$SRPL_HOME``, else ``$XDG_CACHE_HOME/srpl``, else ``~/.cache/srpl`` (the HF_HOME pattern)."""
    env = os.environ.get("SRPL_WORKSPACE") or os.environ.get("SRPL_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "srpl"


def check_name(name: str, what: str = "name") -> str:
    """Speaker and model names become directory names: keep them safe and portable."""
    if not _NAME_RE.match(name) or name in {".", ".."}:
        raise DataError(
            f"invalid {what} '{name}': use letters, digits, '.', '_' or '-' (at most 128, not starting with '.')"
        )
    return name


@dataclass(frozen=True)
class ModelVersion:
    """One tuned model on disk."""

    name: str
    version: str
    path: Path

    @property
    def tune_info(self) -> dict[str, Any]:
        return json.loads((self.path / "tune.json").read_text())


class Workspace:
    """Handle on a workspace directory. Creating the object touches nothing on disk."""

    def __init__(self, root: str | Path | None = None, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).expanduser() if root else default_root()
        self.lock_timeout = lock_timeout

    # ---- layout ----
    @property
    def cache_dir(self) -> Path:
        return self.root / "cache" / "embeddings"

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def downloads_dir(self) -> Path:
        return self.root / "downloads"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def ensure(self) -> Workspace:
        """Create the layout and manifest if missing; refuse a manifest of a newer schema."""
        manifest = self.root / "manifest.json"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if manifest.exists():
                self._check_manifest(manifest)
            else:
                info = {
                    "schema_version": SCHEMA_VERSION,
                    "srpl_version": __version__,
                    "created": _now(),
                }
                atomic_write_text(manifest, json.dumps(info, indent=2))
            for d in (self.cache_dir, self.profiles_dir, self.models_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot use workspace {self.root}: {exc.strerror or exc}") from None
        return self

    def check_writable(self) -> Workspace:
        """``ensure`` plus a real write: a read-only workspace fails here, before any long work."""
        self.ensure()
        try:
            fd, probe = tempfile.mkstemp(dir=self.tmp_dir, prefix=f"{os.getpid()}-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise WorkspaceError(f"cannot write to workspace {self.root}: {exc.strerror or exc}") from None
        return self

    def check_folder(self) -> Workspace:
        """Refuse a workspace path that exists but is not a folder (for read-only commands)."""
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"workspace {self.root} is not a folder")
        return self

    def _check_manifest(self, manifest: Path) -> None:
        try:
            info = json.loads(manifest.read_text())
            version = int(info["schema_version"])
        except (ValueError, KeyError, TypeError):
            raise WorkspaceError(f"{manifest} is not a valid srpl workspace manifest") from None
        if version > SCHEMA_VERSION:
            raise WorkspaceError(
                f"workspace {self.root} uses schema {version}, newer than this srpl ({SCHEMA_VERSION})",
                hint="upgrade srpl: pip install -U srpl-cli",
            )

    # ---- locking ----
    @contextmanager
    def lock(self) -> Iterator[Workspace]:
        """Hold the workspace write lock (an OS file lock: released even if the process is killed)."""
        from filelock import FileLock, Timeout

        self.ensure()
        lock = FileLock(str(self.root / ".lock"), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise WorkspaceError(
                f"workspace {self.root} is busy: another srpl command is writing to it",
                hint="wait for it to finish, or use another --workspace",
            ) from None
        except OSError as exc:  # read-only file system, no permission
            raise WorkspaceError(f"cannot write to workspace {self.root}: {exc.strerror or exc}") from None
        try:
            self._clean_tmp()
            yield self
        except OSError as exc:  # what writers do under the lock is workspace I/O (disk full, ...)
            raise WorkspaceError(
                f"writing to workspace {self.root} failed: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename else "")
            ) from None
        finally:
            lock.release()

    def _clean_tmp(self) -> None:
        """Remove debris a killed run left in tmp/ (only called under the lock)."""
        now = time.time()
        for entry in self.tmp_dir.iterdir():
            try:
                pid = int(entry.name.split("-")[0])
            except ValueError:
                pid = -1
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TMP_S
            except FileNotFoundError:  # a reader (evaluate --cs-my) removed its own build meanwhile
                continue
            if (pid > 0 and not _pid_alive(pid)) or stale:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    @contextmanager
    def building(self, label: str) -> Iterator[Path]:
        """A fresh directory under tmp/ to build into; removed unless the caller renamed it away."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        path = self.tmp_dir / f"{os.getpid()}-{label}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    # ---- profiles ----
    def profile_dir(self, backbone: str, speaker: str) -> Path:
        return self.profiles_dir / backbone / check_name(speaker, "speaker name")

    def save_profile(self, backbone: str, speaker: str, embeddings: np.ndarray, info: dict[str, Any]) -> Path:
        """Store (or replace) one speaker's enrollment for ``backbone``. Call under ``lock()``."""
        target = self.profile_dir(backbone, speaker)
        with self.building(f"profile-{speaker}") as build:
            np.save(build / "embeddings.npy", np.asarray(embeddings, dtype=np.float32), allow_pickle=False)
            info = {**info, "speaker": speaker, "backbone": backbone, "updated": _now()}
            (build / "profile.json").write_text(json.dumps(info, indent=2, default=str))
            _fsync_dir_files(build)
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace_dir(build, target)
        return target

    def load_profiles(self, backbone: str) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """Every enrolled speaker for ``backbone``: name -> (embeddings (n, dim), profile info)."""
        out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        root = self.profiles_dir / backbone
        if not root.is_dir():
            return out
        for d in sorted(root.iterdir()):
            if d.name.startswith(".") or not (d / "profile.json").is_file():
                continue
            try:
                X = np.load(d / "embeddings.npy", allow_pickle=False)
                info = json.loads((d / "profile.json").read_text())
            except (OSError, ValueError) as exc:
                raise WorkspaceError(
                    f"profile {d} is unreadable ({exc}); enroll that speaker again"
                ) from None
            out[d.name] = (X, info)
        return out

    def profile_backbones(self) -> list[str]:
        if not self.profiles_dir.is_dir():
            return []
        return sorted(d.name for d in self.profiles_dir.iterdir() if d.is_dir() and any(d.iterdir()))

    # ---- unlabeled pool (srpl_cli.pool decides what goes in) ----
    def pool_dir(self, backbone: str) -> Path:
        return self.root / "pool" / backbone

    def save_pool(self, backbone: str, embeddings: np.ndarray, meta: dict[str, Any]) -> Path:
        """Replace the unlabeled pool of ``backbone`` as a whole. Call under ``lock()``."""
        target = self.pool_dir(backbone)
        with self.building("pool") as build:
            np.save(build / "embeddings.npy", np.asarray(embeddings, dtype=np.float32), allow_pickle=False)
            (build / "pool.json").write_text(json.dumps({**meta, "updated": _now()}, indent=1, default=str))
            _fsync_dir_files(build)
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace_dir(build, target)
        return target

    # ---- models ----
    def model_versions(self, name: str = DEFAULT_MODEL) -> list[str]:
        d = self.models_dir / check_name(name, "model name")
        if not d.is_dir():
            return []
        versions = [p.name for p in d.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(versions, key=lambda v: int(v[1:]))  # by number: v10000 comes after v9999

    def commit_model(self, build: Path, name: str = DEFAULT_MODEL) -> ModelVersion:
        """Move a completely written model directory into place as a new version, then point CURRENT
        at it. Call under ``lock()``. A crash before the last step leaves the previous model in use."""
        model_dir = self.models_dir / check_name(name, "model name")
        model_dir.mkdir(parents=True, exist_ok=True)
        existing = self.model_versions(name)
        number = int(existing[-1][1:]) + 1 if existing else 1
        version = f"v{number:04d}"
        _fsync_dir_files(build)
        os.rename(build, model_dir / version)
        atomic_write_text(model_dir / "CURRENT", version + "\n")
        return ModelVersion(name, version, model_dir / version)

    def save_model(
        self, model: Any, tune_info: dict[str, Any], name: str, metadata: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Write a fitted backend (``OpenSetClassifier``) and its ``tune.json`` as the next version of model
        ``name`` and put it in use (`tune`, and the refits of `speakers ...`). Call under ``lock()``.
        ``metadata`` (in meta.json) defaults to the backbone named in ``tune_info``."""
        if metadata is None:
            metadata = {"backbone": tune_info["backbone"], "backbone_id": tune_info.get("backbone_id")}
        with self.building("model") as build:
            model.save(build, metadata=metadata)
            (build / "tune.json").write_text(json.dumps(tune_info, indent=2))
            return self.commit_model(build, name)

    def current_model(self, name: str = DEFAULT_MODEL, version: str | None = None) -> ModelVersion:
        """The model in use (or a given version). Raises StateError when nothing is tuned yet."""
        self.check_folder()
        model_dir = self.models_dir / check_name(name, "model name")
        if version is None:
            try:
                version = (model_dir / "CURRENT").read_text(encoding="utf-8").strip()
            except (FileNotFoundError, NotADirectoryError):
                raise StateError(
                    f"no tuned model '{name}' in workspace {self.root}",
                    hint="run: srpl tune ENROLL_DIR --shots 5",
                ) from None
            except UnicodeDecodeError:
                raise StateError(
                    f"{model_dir / 'CURRENT'} is corrupt (not text)",
                    hint=f"write a version name (e.g. v0001) into it, or tune again: srpl tune --model {name} ...",
                ) from None
            except OSError as exc:
                raise WorkspaceError(f"cannot read {model_dir / 'CURRENT'}: {exc.strerror or exc}") from None
        path = model_dir / version
        if not _VERSION_RE.match(version) or not (path / "meta.json").is_file():
            raise StateError(f"model '{name}' has no complete version '{version}' in {self.root}")
        return ModelVersion(name, version, path)

    def set_current(self, name: str, version: str) -> ModelVersion:
        """Roll back (or forward) to an existing version. Call under ``lock()``."""
        mv = self.current_model(name, version)
        atomic_write_text(self.models_dir / name / "CURRENT", version + "\n")
        return mv

    # ---- registered datasets ----
    @property
    def dataset_registry_path(self) -> Path:
        return self.root / "datasets" / "registry.json"

    def datasets(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.dataset_registry_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise WorkspaceError(
                f"{self.dataset_registry_path} is corrupt; run srpl download --dataset again"
            ) from None

    def register_datasets(self, entries: dict[str, dict[str, Any]]) -> None:
        """Add or update registered datasets. Call under ``lock()``."""
        registry = self.datasets()
        registry.update(entries)
        atomic_write_text(self.dataset_registry_path, json.dumps(registry, indent=2, sort_keys=True))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir_files(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _replace_dir(build: Path, target: Path) -> None:
    """Swap a complete directory into place: old moved aside, new renamed in, old deleted."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(build, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
