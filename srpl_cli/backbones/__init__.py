"""Pretrained speaker-embedding models ("backbones"), one file each, imported only when asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from srpl_cli.errors import UsageError

if TYPE_CHECKING:
    from srpl_cli.backbones.base import Backbone

BACKBONES: dict[str, str] = {
    "eres2netv2": "srpl_cli.backbones.eres2netv2:ERes2NetV2Backbone",
    "wavlm": "srpl_cli.backbones.wavlm:WavLMBackbone",
    "dvector": "srpl_cli.backbones.dvector:DVectorBackbone",
}
DEFAULT_BACKBONE = "eres2netv2"


def backbone_class(name: str) -> type[Backbone]:
    try:
        target = BACKBONES[name]
    except KeyError:
        raise UsageError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def get_backbone(name: str, **kwargs: Any) -> Backbone:
    """Load backbone ``name`` (see ``Backbone.load`` for the keyword arguments)."""
    backbone = backbone_class(name).load(**kwargs)
    # how to load the same model elsewhere (Ray workers: srpl_cli.executors)
    backbone.load_spec = {
        "name": name,
        **{k: str(v) if k == "source" and v is not None else v for k, v in kwargs.items()},
    }
    return backbone
