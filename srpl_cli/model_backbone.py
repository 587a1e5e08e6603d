"""The backbone a tuned model needs: loaded, and checked against the one the model was tuned with.

`identify`, `serve` and `--segments` (through ``Identifier``), `speakers add` and `export` all load a
model's backbone here, so they agree on what counts as "other weights". A backbone identifier
(``Backbone.identifier``) is ``<weights id>:fe<N>[:w<window>][:bf16]``; the weights id ends with the
weights file's content hash. Two identifiers describe comparable embeddings when the weights (name +
hash) and the front end (version, window) are the same; the CPU path (``:bf16``) changes the numbers by
cos >= 0.9999 only (``backbones/_cpu.py``) and is not a mismatch. Identifiers written before front-end
versions existed carry no ``:fe`` part: front end 1.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srpl_cli.errors import StateError

if TYPE_CHECKING:
    from srpl_cli.backbones.base import Backbone

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^(?P<weights>.*?)(?::fe(?P<fe>\d+))?(?::w(?P<window>[0-9.e+-]+))?(?P<bf16>:bf16)?$")


@dataclass(frozen=True)
class BackboneId:
    """The parts of a backbone identifier that decide whether embeddings are comparable."""

    name: str
    digest: str
    frontend: int
    window: str | None
    bf16: bool

    @classmethod
    def parse(cls, identifier: str) -> BackboneId:
        m = _ID_RE.match(identifier)
        assert m is not None  # every string matches: the weights part takes what the rest does not
        parts = m["weights"].split(":")
        # "dvector:resemblyzer-0.1.4:<hash>" and "dvector:local:<hash>" are the same file: name + hash
        return cls(parts[0], parts[-1], int(m["fe"] or 1), m["window"], bool(m["bf16"]))


@dataclass(frozen=True)
class Mismatch:
    """Why a backbone's embeddings do not fit a model: one line, and what to do about it."""

    reason: str
    hint: str | None


def mismatch(tuned: str | None, loaded: str, model: str) -> Mismatch | None:
    """Why embeddings of backbone ``loaded`` do not fit ``model`` (tuned with ``tuned``); ``None`` when
    they do (or when the model does not say what it was tuned with)."""
    if not tuned or tuned == loaded:
        return None
    a, b = BackboneId.parse(tuned), BackboneId.parse(loaded)
    if (a.name, a.digest) != (b.name, b.digest):
        return Mismatch(
            f"the {b.name} weights found ({loaded}) differ from those {model} was tuned with ({tuned})",
            "pass the weights it was tuned with (--backbone-path), or tune again",
        )
    if a.frontend != b.frontend or a.window != b.window:
        if a.frontend != b.frontend:
            age = "an older" if a.frontend < b.frontend else "a newer"
            when = f"{age} {b.name} front end (fe{a.frontend}; this srpl embeds with fe{b.frontend})"
        else:
            when = f"other {b.name} windows ({a.window or '-'} s; this srpl uses {b.window or '-'} s)"
        return Mismatch(f"{model} was tuned under {when}: re-tune it (srpl tune)", None)
    return None


def load_model_backbone(
    info: dict[str, Any],
    model: str,
    source: str | Path | None = None,
    *,
    strict: bool,
    loaded: Backbone | None = None,
    **load_kwargs: Any,
) -> Backbone:
    """The backbone named by a model's tune.json ``info`` (from ``source``, else the weights it was tuned
    from), checked against ``info["backbone_id"]``. ``loaded`` is returned as it is when it fits (a server
    switching model versions keeps its weights). A mismatch is a warning, or with ``strict`` (the caller
    would store or ship new embeddings beside the model's) a ``StateError``."""
    from srpl_cli.backbones import get_backbone

    tuned = info.get("backbone_id")
    if (
        loaded is not None
        and loaded.name == info["backbone"]
        and mismatch(tuned, loaded.identifier, model) is None
    ):
        return loaded
    backbone = get_backbone(info["backbone"], source=source or info.get("backbone_source"), **load_kwargs)
    why = mismatch(tuned, backbone.identifier, model)
    if why is not None:
        if strict:
            raise StateError(
                why.reason + (": embeddings would not be comparable" if why.hint else ""), hint=why.hint
            )
        log.warning(why.reason + ("; scores may be off" if why.hint else "; until then scores may be off"))
    elif tuned and tuned != backbone.identifier:
        log.info("%s was tuned on another CPU path (%s); this run uses %s", model, tuned, backbone.identifier)
    return backbone
