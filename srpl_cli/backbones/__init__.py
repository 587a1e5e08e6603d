"""Pretrained speaker-embedding models ("backbones"), one file each, imported only when asked for."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
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
    spec = {"name": name, **kwargs}
    if spec.get("source") is not None:  # workers may run in another directory or on another node
        spec["source"] = str(Path(spec["source"]).expanduser().absolute())
    if "path" in inspect.signature(type(backbone).load).parameters:
        spec["path"] = backbone.path  # the resolved inference path: "auto" can resolve otherwise on a worker
    backbone.load_spec = spec
    return backbone


def usable_offline(name: str) -> bool:
    """Whether backbone ``name`` loads now without the network (cheap: looks at files, loads nothing)."""
    from srpl_cli.backbones import _hub

    if name == "dvector":
        from srpl_cli.backbones.dvector import packaged_weights

        return packaged_weights() is not None
    model = _hub.hub_model(name)
    if model.hub == "modelscope":  # the direct look-up only: importing the ModelScope SDK takes seconds
        return any(
            d.is_dir() and not _hub.missing_files(d, model) for d in _hub.modelscope_cache_candidates(model)
        )
    return _hub.cached_model_dir(name) is not None


def tune_hint(shots: int = 5) -> str:
    """The `srpl tune` command to suggest: naming ``--backbone dvector`` when the default backbone is not
    cached, so an offline user is not sent straight into a download error."""
    hint = f"run: srpl tune ENROLL_DIR --shots {shots}"
    try:
        ready = usable_offline(DEFAULT_BACKBONE)
    except Exception:  # noqa: BLE001 - a hint must never fail
        ready = False
    return hint if ready else hint + " --backbone dvector"
