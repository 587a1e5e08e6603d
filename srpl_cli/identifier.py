"""A tuned model ready to answer "who speaks?": one model version's open-set backend + its backbone.

`srpl identify` loads one per run and scores files (through the embedding cache); `srpl serve` keeps
one loaded, scores uploads decoded in memory, and swaps in a new one when the model's CURRENT pointer
moves. Both answer through ``Identifier`` so the CLI and the server cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from srpl_cli.errors import AudioError, StateError
from srpl_cli.workspace import DEFAULT_MODEL, ModelVersion, Workspace

if TYPE_CHECKING:
    from srpl_cli.backbones.base import Backbone
    from srpl_cli.backends.base import OpenSetClassifier
    from srpl_cli.embeddings import EmbeddingCache, ExtractionResult, Progress

log = logging.getLogger(__name__)

#: answers carry the scores of this many best speakers per clip (all of them when fewer are enrolled):
#: a model of 100,000 speakers would otherwise print 100,000 numbers per clip
SCORES_SHOWN = 100


@dataclass
class Identification:
    """The answer for one clip (one line of ``srpl identify --json``)."""

    path: str
    speaker: str | None
    score: float | None
    scores: dict[str, float]
    top: list[tuple[str, float]]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top"] = [{"speaker": s, "score": v} for s, v in self.top]
        if self.error is None:
            d.pop("error")
        return d


def current_model(ws: Workspace, model_name: str = DEFAULT_MODEL, version: str | None = None) -> ModelVersion:
    """``ws.current_model``, whose "nothing tuned" hint names a backbone that works here and now."""
    from srpl_cli.backbones import tune_hint

    try:
        return ws.current_model(model_name, version)
    except StateError as exc:
        if exc.hint and exc.hint.startswith("run: srpl tune"):
            exc.hint = tune_hint()
        raise


def load_model(
    workspace: Workspace | None = None, model_name: str = DEFAULT_MODEL, version: str | None = None
) -> tuple[OpenSetClassifier, dict[str, Any], ModelVersion]:
    """(backend, tune info, ModelVersion) of the model in use (or of ``version``)."""
    from srpl_cli.backends import load_backend

    ws = workspace or Workspace()
    mv = current_model(ws, model_name, version)
    try:
        info = mv.tune_info
    except (OSError, ValueError):
        raise StateError(f"model {mv.path} is incomplete (no readable tune.json); tune again") from None
    if not isinstance(info, dict) or not isinstance(info.get("backbone"), str):
        raise StateError(f"model {mv.path}: tune.json does not name the backbone; tune again")
    return load_backend(mv.path), info, mv


class Identifier:
    """A loaded model version that scores clips. Immutable once built: a server swaps whole objects."""

    def __init__(
        self, backend: OpenSetClassifier, backbone: Backbone, info: dict[str, Any], version: ModelVersion
    ) -> None:
        self.backend = backend
        self.backbone = backbone
        self.info = info
        self.version = version
        self.speakers = [str(c) for c in backend.classes_]

    @classmethod
    def load(
        cls,
        workspace: Workspace | None = None,
        model_name: str = DEFAULT_MODEL,
        version: str | None = None,
        backbone_source: str | Path | None = None,
        backbone: Backbone | None = None,
    ) -> Identifier:
        """Load the model in use; ``backbone`` is reused when it is the one the model was tuned with
        (a server switching versions keeps the loaded weights)."""
        from srpl_cli.model_backbone import load_model_backbone

        backend, info, mv = load_model(workspace, model_name, version)
        backbone = load_model_backbone(
            info, f"model '{mv.name}'", backbone_source, strict=False, loaded=backbone
        )
        return cls(backend, backbone, info, mv)

    @property
    def threshold(self) -> float:
        return float(self.backend.threshold_)

    def describe(self) -> dict[str, Any]:
        """What is being served: name, version, method, backbone, threshold, speakers."""
        return {
            "name": self.version.name,
            "version": self.version.version,
            "method": self.info.get("method"),
            "backbone": self.backbone.name,
            "backbone_id": self.backbone.identifier,
            "threshold": self.threshold,
            "speakers": self.speakers,
        }

    # ---- answers ----
    def identify_files(
        self,
        paths: Sequence[Path],
        cache: EmbeddingCache | None = None,
        top_k: int = 3,
        threshold: float | None = None,
        progress: Progress | None = None,
        min_speech_s: float = 0.5,
    ) -> list[Identification]:
        """One answer per path, in order; an unusable clip gets an answer with ``error`` set."""
        res = self.embed_files(paths, cache, progress, min_speech_s)
        return self.answer(paths, res, top_k, threshold)

    def embed_files(
        self,
        paths: Sequence[Path],
        cache: EmbeddingCache | None = None,
        progress: Progress | None = None,
        min_speech_s: float = 0.5,
    ) -> ExtractionResult:
        """Embed ``paths`` with the model's backbone (through ``cache``), for ``answer``."""
        from srpl_cli.embeddings import extract_embeddings
        from srpl_cli.executors import current_executor

        res = extract_embeddings(
            list(paths),
            self.backbone,
            cache=cache,
            progress=progress,
            min_speech_s=min_speech_s,
            executor=current_executor(),  # --engine: set by the command with executors.use_executor
        )
        for p, q in zip(res.paths_ok, res.qualities, strict=True):
            for w in q.warnings:
                if "outside [-1, 1]" in w:  # the clip was changed before scoring: say so
                    log.warning("%s: %s", p, w)
        return res

    def answer(
        self, paths: Sequence[Path], res: ExtractionResult, top_k: int = 3, threshold: float | None = None
    ) -> list[Identification]:
        """One answer per path of ``embed_files(paths)``, in order."""
        answers = dict(zip(map(str, res.paths_ok), self.score(res.embeddings, top_k, threshold), strict=True))
        for p, reason in res.problems:
            answers[str(p)] = _failed(str(p), reason)
        return [_labelled(answers[str(p)], str(p)) for p in paths]

    def identify_waves(
        self,
        clips: Sequence[tuple[str, np.ndarray]],
        top_k: int = 3,
        threshold: float | None = None,
        min_speech_s: float = 0.5,
    ) -> list[Identification]:
        """Like ``identify_files`` for decoded 16 kHz mono waveforms labelled by name (no cache: a
        server's uploads are transient, and none of them is stored)."""
        from srpl_cli.audio import validate

        ok: list[int] = []
        waves: list[np.ndarray] = []
        answers: list[Identification | None] = [None] * len(clips)
        for i, (label, wave) in enumerate(clips):
            try:
                waves.append(validate(wave, min_speech_s, name=label)[0])
                ok.append(i)
            except AudioError as exc:
                answers[i] = _failed(label, exc.reason)
        if waves:
            X = np.asarray(self.backbone.embed(waves), dtype=np.float32)
            for i, answer in zip(ok, self.score(X, top_k, threshold), strict=True):
                answers[i] = _labelled(answer, clips[i][0])
        return [a for a in answers if a is not None]

    def score(self, X: np.ndarray, top_k: int = 3, threshold: float | None = None) -> list[Identification]:
        """Answers for embeddings ``X (n, dim)``: the best speaker if its score reaches the threshold."""
        if len(X) == 0:
            return []
        thr = self.threshold if threshold is None else float(threshold)
        names = self.speakers
        # only the best speakers of each clip are ranked and kept: never clips x enrolled speakers
        idx, val = self.backend.top_k(X, max(top_k, SCORES_SHOWN))
        out = []
        for cols, row in zip(idx.tolist(), val.tolist(), strict=True):
            score = row[0]
            out.append(
                Identification(
                    path="",
                    speaker=names[cols[0]] if score >= thr else None,
                    score=score,
                    scores={names[i]: v for i, v in zip(cols, row, strict=True)},
                    top=[(names[i], v) for i, v in zip(cols[: max(1, top_k)], row, strict=False)],
                )
            )
        return out


def _failed(label: str, reason: str) -> Identification:
    return Identification(label, None, None, {}, [], error=reason)


def _labelled(answer: Identification, label: str) -> Identification:
    answer.path = label
    return answer
