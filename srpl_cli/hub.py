"""Fetch the SpeakerRPL authors' released embedding datasets and checkpoints, and register them.

The authors publish two Hugging Face dataset repos whose inner layout is not documented. After a
(resumable) snapshot we unpack any archives, then *discover* datasets: every folder holding an
``emb_train``/``emb_test`` split is one dataset, named after that folder, and any ``*.pth`` files in
or beside it are its checkpoints. ``srpl evaluate --dataset NAME`` then finds it by name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from srpl_cli.datasets import SPLITS
from srpl_cli.errors import DataError, ModelUnavailableError
from srpl_cli.workspace import Workspace

log = logging.getLogger(__name__)

DATASET_REPOS = (
    "zhiyongchen/speakerRPL_dataset",
    "zhiyongchen/robust_speaker_recognition_OSI_with_TTS",
)


def offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
        for v in ("SRPL_OFFLINE", "HF_HUB_OFFLINE")
    )


def snapshot_dataset_repo(repo_id: str, local_dir: Path, local_files_only: bool = False) -> Path:
    """Download (or resume) one dataset repo into ``local_dir``; offline uses what is already there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    have_copy = local_dir.is_dir() and any(local_dir.iterdir())
    if not (local_files_only or offline() or have_copy):
        # a quick TCP probe names the real problem (no network) instead of the hub client's error chain
        from srpl_cli.backbones._hub import hub_endpoint, probe

        reason = probe(hub_endpoint("huggingface"))
        if reason is not None:
            raise ModelUnavailableError(
                f"cannot download dataset repo {repo_id}: the network is unreachable ({reason})",
                hint="connect to the network and run srpl download --dataset again; "
                "meanwhile `srpl evaluate --data DIR` works on your own audio folders",
            )
    try:
        path = snapshot_download(
            repo_id=repo_id,
            repo_type="dataset",
            local_dir=str(local_dir),
            local_files_only=local_files_only or offline(),
            etag_timeout=10,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        if local_dir.is_dir() and any(local_dir.iterdir()):
            log.warning("could not refresh %s (%s); using the copy already downloaded", repo_id, exc)
            return local_dir
        raise ModelUnavailableError(
            f"cannot download dataset repo {repo_id}: {_short(exc)}",
            hint="check the network connection (and HF_HUB_OFFLINE / SRPL_OFFLINE), then run srpl download --dataset again",
        ) from None
    return Path(path)


def _short(exc: Exception) -> str:
    """First line of a hub error, without the client's "Got: <ExceptionName>:" wrapping."""
    import re

    text = str(exc).strip().splitlines()
    line = re.sub(r"^(Got: )?\w+(Error|Exception): ", "", text[0]) if text else type(exc).__name__
    return line[:200]


def unpack_archives(root: Path) -> list[Path]:
    """Unpack .zip / .tar(.gz) files found under ``root`` beside themselves, once, refusing unsafe paths."""
    done = []
    for archive in sorted(root.rglob("*")):
        name = archive.name.lower()
        if not archive.is_file() or not name.endswith((".zip", ".tar", ".tar.gz", ".tgz")):
            continue
        stem = archive.name
        for ext in (".tar.gz", ".tgz", ".zip", ".tar"):
            if name.endswith(ext):
                stem = archive.name[: -len(ext)]
                break
        target = archive.parent / stem
        marker = archive.parent / f".{stem}.unpacked"
        if marker.exists():
            continue
        tmp = archive.parent / f".{stem}.unpacking"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            if name.endswith(".zip"):
                with zipfile.ZipFile(archive) as zf:
                    for member in zf.namelist():
                        _check_member(tmp, member, archive)
                    zf.extractall(tmp)
            else:
                with tarfile.open(archive) as tf:
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(tmp, filter="data")
                    else:  # Python < 3.10.12 has no extraction filters: check paths, skip links
                        members = [m for m in tf.getmembers() if m.isfile() or m.isdir()]
                        for m in members:
                            _check_member(tmp, m.name, archive)
                        tf.extractall(tmp, members=members)
        except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"{archive}: cannot unpack ({exc}); delete it and download again") from None
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
        marker.touch()
        done.append(target)
    return done


def _check_member(root: Path, member: str, archive: Path) -> None:
    dest = (root / member).resolve()
    if not str(dest).startswith(str(root.resolve()) + os.sep) and dest != root.resolve():
        raise DataError(f"{archive}: refuses to unpack '{member}' outside its folder")


def discover_datasets(root: Path, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every folder under ``root`` that holds an emb_* split -> a registry entry named after it."""
    found: dict[str, dict[str, Any]] = {}
    for split_dir in sorted(p for p in root.rglob("*") if p.is_dir() and p.name in SPLITS):
        ds = split_dir.parent
        # hidden folders and the AppleDouble copies macOS zips carry (__MACOSX/<same layout>/._0.npy)
        if any(part.startswith(".") or part == "__MACOSX" for part in ds.relative_to(root).parts):
            continue
        key = str(ds)
        if any(e["path"] == key for e in found.values()):
            continue
        name = ds.name if ds != root else (prefix or root.name)
        if name in found:  # same folder name in two places: qualify with the parent (and a number)
            name = base = f"{ds.parent.name}-{ds.name}"
            n = 2
            while name in found:
                name, n = f"{base}-{n}", n + 1
        splits = sorted(p.name for p in ds.iterdir() if p.is_dir() and p.name in SPLITS)
        checkpoints = sorted(str(p) for p in ds.rglob("*.pth"))
        if not checkpoints:
            checkpoints = sorted(str(p) for p in ds.parent.glob("*.pth") if ds.name.lower() in p.name.lower())
        found[name] = {"path": key, "splits": splits, "checkpoints": checkpoints}
    return found


def download_datasets(
    name: str = "all",
    workspace: Workspace | None = None,
    repos: tuple[str, ...] = DATASET_REPOS,
    snapshot: Callable[[str, Path, bool], Path] = snapshot_dataset_repo,
) -> dict[str, dict[str, Any]]:
    """Fetch the authors' repos, discover their datasets and register them in the workspace.

    ``name='all'`` registers every dataset found; otherwise only ``name`` (an error lists what exists).
    """
    ws = (workspace or Workspace()).ensure()
    found: dict[str, dict[str, Any]] = {}
    for repo in repos:
        local = ws.downloads_dir / repo.replace("/", "__")
        # absolute: the registry is read by `evaluate --dataset` from any working directory
        path = Path(snapshot(repo, local, False)).absolute()
        unpack_archives(path)
        for ds_name, entry in discover_datasets(path).items():
            entry["repo"] = repo
            if ds_name in found:
                ds_name = f"{repo.split('/')[-1]}-{ds_name}"
            found[ds_name] = entry
    if not found:
        raise DataError("the downloaded repos hold no emb_train/emb_test folders: the release layout changed")
    if name != "all":
        if name not in found:
            raise DataError(
                f"no dataset '{name}' in the authors' release; available: {', '.join(sorted(found))}"
            )
        found = {name: found[name]}
    with ws.lock():
        ws.register_datasets(found)
    return found
