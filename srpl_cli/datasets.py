"""Readers for the data srpl consumes: the SpeakerRPL authors' embedding datasets and speaker folders.

Embedding datasets use the authors' layout ``<root>/{emb_train,emb_test,emb_train_unknown_control}/
<speaker-int>/<n>.npy`` where each file is a real ``np.save`` array or (despite the name) a torch
pickle of a numpy array. Both are read without executing code.

Audio enrollment data is ``<root>/<speaker>/<clip>.<ext>`` or a CSV manifest with ``path,speaker``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srpl_cli.errors import DataError

logger = logging.getLogger(__name__)

SPLITS = ("emb_train", "emb_test", "emb_train_unknown_control")
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus", ".w64", ".caf"}


@dataclass
class EmbeddingSplit:
    """All embeddings of one split: X (n, dim) float32, y (n,) speaker ids, file order within speaker."""

    X: np.ndarray
    y: np.ndarray
    order: np.ndarray
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def speakers(self) -> list[int]:
        return sorted(int(s) for s in np.unique(self.y))

    def subset(self, mask: np.ndarray) -> EmbeddingSplit:
        idx = np.flatnonzero(mask)
        return EmbeddingSplit(self.X[idx], self.y[idx], self.order[idx], [self.paths[i] for i in idx])


def is_embedding_dataset(root: Path) -> bool:
    return any((root / s).is_dir() for s in SPLITS)


def load_embedding_file(path: Path) -> np.ndarray:
    """One embedding file -> float32 (dim,). np.save format first, else a weights-only torch load."""
    # torch.save writes a zip archive (np.load would open it as an .npz); np.save writes .npy
    try:
        if zipfile.is_zipfile(path):
            arr = _load_torch_pickle(path)
        else:
            arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a numpy array file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read embedding ({exc})") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{path}: expected one embedding vector, got an array of shape {arr.shape}")
    return arr


def _load_torch_pickle(path: Path) -> np.ndarray:
    from srpl_cli.backends.reference import safe_torch_load

    obj = safe_torch_load(path)
    if hasattr(obj, "numpy"):
        obj = obj.detach().cpu().numpy()
    if not isinstance(obj, np.ndarray):
        raise DataError(f"{path}: holds a {type(obj).__name__}, not an embedding array")
    return obj


def _numeric_key(p: Path) -> tuple[int, str]:
    m = re.match(r"^(\d+)", p.stem)
    return (int(m.group(1)) if m else 1 << 62, p.name)


def read_embedding_split(root: Path, split: str) -> EmbeddingSplit:
    """Read ``root/split/<speaker-int>/<n>.npy`` (files in numeric order within each speaker)."""
    base = Path(root) / split
    if not base.is_dir():
        raise DataError(f"{base}: missing (expected the authors' layout {root}/{split}/<speaker>/<n>.npy)")
    X, y, order, paths = [], [], [], []
    spk_dirs = [d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not spk_dirs:
        raise DataError(f"{base}: no speaker folders")
    for d in spk_dirs:
        try:
            spk = int(d.name)
        except ValueError:
            raise DataError(f"{d}: speaker folders of an embedding dataset must be integers") from None
        files = sorted(
            (f for f in d.iterdir() if f.suffix in {".npy", ".pt", ".pth"} and not f.name.startswith(".")),
            key=_numeric_key,
        )
        for i, f in enumerate(files):
            X.append(load_embedding_file(f))
            y.append(spk)
            order.append(i)
            paths.append(f)
    if not X:
        raise DataError(f"{base}: no embedding files (.npy)")
    dims = {x.shape[0] for x in X}
    if len(dims) > 1:
        raise DataError(f"{base}: embeddings have different dimensions {sorted(dims)}")
    return EmbeddingSplit(np.stack(X), np.asarray(y, dtype=np.int64), np.asarray(order), paths)


def read_embedding_dataset(root: str | Path) -> dict[str, EmbeddingSplit]:
    """Every split present under ``root`` (at least emb_test or emb_train)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    splits = {s: read_embedding_split(root, s) for s in SPLITS if (root / s).is_dir()}
    if "emb_test" not in splits and "emb_train" not in splits:
        raise DataError(
            f"{root}: not an embedding dataset (expected emb_train/ and emb_test/ with <speaker>/<n>.npy)"
        )
    return splits


def parse_speaker_range(text: str) -> list[int]:
    """'0-4' -> [0..4]; '0,2,5-7' -> [0,2,5,6,7]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise DataError(f"invalid speaker list '{text}': use e.g. 0-4 or 0,2,5-7") from None
    if not out:
        raise DataError(f"invalid speaker list '{text}'")
    return sorted(set(out))


# ---- audio folders ----
def is_audio_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")


def walk_audio(root: Path) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """(audio files, other files, unreadable folders with the reason) under ``root``, recursively.

    Unlike ``Path.rglob``, which skips a folder it cannot read without a word, every unreadable
    folder is reported. Hidden files and folders are ignored; symlinked folders are followed once.
    """
    audio: list[Path] = []
    other: list[Path] = []
    errors: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def onerror(exc: OSError) -> None:
        errors.append((Path(exc.filename) if exc.filename else root, exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            f = Path(dirpath) / name
            if name.startswith(".") or not f.is_file():
                continue
            (audio if f.suffix.lower() in AUDIO_EXTENSIONS else other).append(f)
    return sorted(audio), sorted(other), errors


def _no_clip_reason(other: list[Path], errors: list[tuple[Path, str]]) -> str:
    if errors and not other:
        return f"cannot read {errors[0][0]} ({errors[0][1]})"
    if other:
        kinds = sorted({f.suffix.lower() or "(no extension)" for f in other})
        return (
            f"no supported audio ({len(other)} file(s) of type {', '.join(kinds)}; "
            f"supported: {', '.join(sorted(AUDIO_EXTENSIONS))})"
        )
    return "empty folder"


def read_speaker_folders(
    root: str | Path, min_speakers: int = 1, allow_missing: bool = False
) -> dict[str, list[Path]]:
    """``root/<speaker>/<clip>`` or a CSV manifest (``path,speaker``) -> speaker -> sorted clip paths.

    A speaker folder that yields no clip (unreadable, only unsupported files such as .m4a, empty) is
    an error naming it, or with ``allow_missing`` a warning and the speaker is left out. An unreadable
    sub-folder is a warning. Two speakers whose names differ only in case (``alice``/``Alice``) are
    a warning: they are two people to srpl.
    """
    root = Path(root)
    if root.is_file():
        return read_manifest(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory or CSV manifest")
    speakers: dict[str, list[Path]] = {}
    missing: dict[str, str] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DataError(f"{root}: cannot read folder ({exc.strerror or exc})") from None
    loose = [p for p in entries if is_audio_file(p)]
    for d in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        clips, other, errors = walk_audio(d)
        for folder, reason in errors:
            if clips:
                logger.warning(
                    "speaker '%s': cannot read %s (%s): its clips are left out", d.name, folder, reason
                )
        if clips:
            speakers[d.name] = clips
        else:
            missing[d.name] = _no_clip_reason(other, errors)
    if missing and (speakers or not loose):
        listed = "; ".join(f"'{s}': {r}" for s, r in missing.items())
        if not allow_missing:
            raise DataError(
                f"{root}: {len(missing)} speaker folder(s) with no usable clip: {listed}",
                hint="fix or remove them, or pass --allow-missing to go on without them",
            )
        for s, r in missing.items():
            logger.warning("speaker '%s' left out: %s", s, r)
    if not speakers:
        hint = (
            " (found audio files directly in it: put each speaker's clips in their own folder)"
            if loose
            else ""
        )
        raise DataError(f"{root}: expected one folder per speaker with audio clips inside{hint}")
    warn_case_collisions(speakers)
    if len(speakers) < min_speakers:
        raise DataError(f"{root}: found {len(speakers)} speaker folder(s), need at least {min_speakers}")
    return speakers


def warn_case_collisions(speakers: dict[str, list[Path]]) -> None:
    """Warn about speaker names that differ only in letter case: srpl keeps them apart."""
    by_lower: dict[str, list[str]] = {}
    for name in speakers:
        by_lower.setdefault(name.casefold(), []).append(name)
    for names in by_lower.values():
        if len(names) > 1:
            logger.warning(
                "speakers %s differ only in letter case: they are enrolled as %d different people",
                " and ".join(repr(n) for n in sorted(names)),
                len(names),
            )


def read_manifest(path: Path) -> dict[str, list[Path]]:
    """CSV with a header naming ``path`` and ``speaker`` columns; relative paths are relative to the CSV."""
    speakers: dict[str, list[Path]] = {}
    speaker_of: dict[Path, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: Excel writes a BOM
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields or "speaker" not in fields:
                raise DataError(f"{path}: a manifest needs a header with 'path' and 'speaker' columns")
            for lineno, row in enumerate(reader, start=2):
                # cells beyond the header land under the key None as a list: ignore them
                row = {
                    k.strip().lower(): (v or "").strip()
                    for k, v in row.items()
                    if isinstance(k, str) and not isinstance(v, list)
                }
                if not row["path"] or not row["speaker"]:
                    raise DataError(f"{path}:{lineno}: empty path or speaker")
                clip = Path(row["path"])
                if not clip.is_absolute():
                    clip = path.parent / clip
                # a clip listed twice would be its own held-out twin during calibration
                if clip in speaker_of:
                    if speaker_of[clip] != row["speaker"]:
                        raise DataError(
                            f"{path}:{lineno}: {row['path']} is listed for both "
                            f"'{speaker_of[clip]}' and '{row['speaker']}'"
                        )
                    continue
                speaker_of[clip] = row["speaker"]
                speakers.setdefault(row["speaker"], []).append(clip)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV manifest") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV manifest ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    if not speakers:
        raise DataError(f"{path}: manifest lists no clips")
    warn_case_collisions(speakers)
    return speakers


def collect_audio(paths: list[str | Path], problems: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Clips and directories (searched recursively) -> audio files, in the order given.

    A directory without audio is an error, or, when ``problems`` is given, recorded there so a batch
    command can go on with the other arguments.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found, _, errors = walk_audio(p)
            for folder, reason in errors:
                logger.warning("cannot read %s (%s): its clips are skipped", folder, reason)
            if not found:
                if problems is None:
                    raise DataError(f"{p}: no audio files in this directory")
                problems.append((p, "no audio files in this directory"))
            out.extend(found)
        else:
            out.append(p)
    return out
