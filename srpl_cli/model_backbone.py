"""The backbone a tuned model needs: loaded, and checked against the one the model was tuned with.

`identify`, `serve` and `--segments` (through ``Identifier``), `speakers add` and `export` all load a
model's backbone here, so they agree on what counts as "other weights".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srpl_cli.errors import StateError

if TYPE_CHECKING:
    from srpl_cli.backbones.base import Backbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mismatch:
    """Why a backbone's embeddings do not fit a model: one line, and what to do about it."""

    reason: str
    hint: str | None


def mismatch(tuned: str | None, loaded: str, model: str) -> Mismatch | None:
    """Why embeddings of backbone ``loaded`` do not fit ``model`` (tuned with ``tuned``); ``None`` when
    they do (or when the model does not say what it was tuned with)."""
    if not tuned or tuned.removesuffix(":bf16") == loaded.removesuffix(":bf16"):
        return None  # the CPU path changes the numbers by cos >= 0.9999 only (backbones/_cpu.py)
    name = loaded.split(":")[0]
    return Mismatch(
        f"the {name} weights found ({loaded}) differ from those {model} was tuned with ({tuned})",
        "pass the weights it was tuned with (--backbone-path), or tune again",
    )


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
    return backbone
