"""The contract every backbone follows: 16 kHz mono waveforms in, float32 (n, dim) embeddings out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np


class Backbone(ABC):
    """A frozen pretrained speaker model.

    Subclasses import torch & co. inside their methods so that importing the registry stays cheap.
    """

    #: registry name (``--backbone NAME``)
    name: ClassVar[str] = ""
    #: embedding dimension
    dim: ClassVar[int] = 0
    sample_rate: ClassVar[int] = 16000
    #: bump when the front end (features, trimming, windowing) changes: it is part of ``identifier``, so
    #: cached embeddings and tuned models made with the old front end are never mixed with new ones
    frontend_version: ClassVar[int] = 1

    @classmethod
    @abstractmethod
    def load(
        cls,
        source: str | Path | None = None,
        *,
        local_files_only: bool | None = None,
        device: str | None = None,
    ) -> Backbone:
        """Load the model.

        ``source`` is an explicit local directory (or file) holding the weights; ``None`` means the
        registered hub model, resolved from the local cache first and then the network (unless
        ``local_files_only`` or the hub's offline variables say otherwise). A model that cannot be
        found raises ``ModelUnavailableError`` naming ``srpl download`` and ``--backbone dvector``.
        """

    #: name + content hash of the weights, set by ``load`` (same file, same id, wherever it came from)
    _identifier: str = ""

    @property
    def identifier(self) -> str:
        """Weights id + front-end version + window length: the full identity of the embeddings, part
        of the embedding cache key."""
        window = getattr(self, "window_s", None)
        return f"{self._identifier}:fe{self.frontend_version}" + (f":w{window:g}" if window else "")

    @abstractmethod
    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of 16 kHz mono float32 waveforms -> float32 (len(waves), dim)."""
