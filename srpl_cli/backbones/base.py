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
    #: inference path (see ``_cpu.py``): ``eager`` (reference), ``fp32`` (fast CPU) or ``bf16`` (fast CPU,
    #: reduced precision: the only one that changes the numbers, hence the only one in ``identifier``)
    path: str = "eager"

    @property
    def identifier(self) -> str:
        """Weights id + front-end version + window length (+ ``:bf16`` for the reduced-precision path): the
        full identity of the embeddings, part of the embedding cache key."""
        window = getattr(self, "window_s", None)
        ident = f"{self._identifier}:fe{self.frontend_version}" + (f":w{window:g}" if window else "")
        return ident + (":bf16" if self.path == "bf16" else "")

    @abstractmethod
    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of 16 kHz mono float32 waveforms -> float32 (len(waves), dim)."""


def equal_length_groups(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped for batched forward passes: only items of *equal* length share a group.

    Padding to a batch's longest item makes an embedding depend on its neighbours whenever the network
    normalises or pools over padded frames (ERes2NetV2's statistics pooling, WavLM's first GroupNorm over
    the whole time axis), and the embedding cache would then store a batch-dependent result. Equal-length
    groups never pad, so every embedding is the one the clip gets alone; fixed-length windows and datasets
    of fixed-length clips still batch fully.
    """
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    groups: list[list[int]] = []
    for k in order:
        if groups and len(groups[-1]) < batch_size and lengths[groups[-1][0]] == lengths[k]:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups
