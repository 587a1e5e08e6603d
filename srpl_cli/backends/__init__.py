"""Open-set backends: scikit-learn style estimators on embedding arrays (never audio).

The registry maps a name to ``"module:Class"``; the class is imported only when asked for, so adding a
backend is one new file plus one line here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srpl_cli.errors import DataError, UsageError

if TYPE_CHECKING:
    from srpl_cli.backends.base import OpenSetClassifier

BACKENDS: dict[str, str] = {
    "cosine": "srpl_cli.backends.cosine:CosineBackend",
    "srpl": "srpl_cli.backends.srpl:SRPLBackend",
    "anchored-cosine": "srpl_cli.backends.anchored_cosine:AnchoredCosineBackend",
    "as-norm": "srpl_cli.backends.as_norm:ASNormBackend",
    "pool-propagation": "srpl_cli.backends.pool_propagation:PoolPropagationBackend",
    "srpl-v2": "srpl_cli.backends.srpl_v2:SRPLv2Backend",
}


def backend_class(name: str) -> type[OpenSetClassifier]:
    """The estimator class registered under ``name``."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise UsageError(f"unknown method '{name}'; choose one of: {', '.join(BACKENDS)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str, **params: Any) -> OpenSetClassifier:
    """A new, unfitted estimator ``name`` with the given hyper-parameters."""
    return backend_class(name)(**params)


def load_backend(path: str | Path) -> OpenSetClassifier:
    """Load a backend saved with ``save`` (any registered kind) from a directory."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{path}: not a saved srpl model (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text())
        name = meta["backend"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path}: unreadable model metadata ({exc})") from None
    return backend_class(name).load(path)
