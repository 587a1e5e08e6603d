"""WavLM x-vector (512-d): Hugging Face ``microsoft/wavlm-base-plus-sv`` through transformers.

Chen et al., "WavLM: Large-Scale Self-Supervised Pre-Training for Full Stack Speech Processing" (2022),
fine-tuned for speaker verification with an x-vector head. The feature extractor + ``WavLMForXVector``
``embeddings`` output is what the SpeakerRPL authors used for their WavLM embedding sets; we
L2-normalise it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.audio import DEFAULT_WINDOW_S, windows
from srpl_cli.backbones import _cpu, _hub
from srpl_cli.backbones.base import Backbone, equal_length_groups
from srpl_cli.errors import ModelUnavailableError

MODEL_NAME = "wavlm"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MIN_SAMPLES = 1600


class WavLMBackbone(Backbone):
    """``WavLMForXVector`` embeddings, L2-normalised (512-d for the hub model)."""

    name = MODEL_NAME
    dim = 512

    def __init__(
        self,
        model: Any,
        extractor: Any,
        device: str,
        identifier: str,
        dim: int,
        window_s: float = DEFAULT_WINDOW_S,
        path: str = "eager",
    ) -> None:
        self._model = prepare_model(model, path)
        self._extractor = extractor
        self.device = device
        self._identifier = identifier
        self.dim = dim  # type: ignore[misc]  # instance value: a local model may differ from 512
        self.window_s = window_s
        self.path = path

    def with_path(self, path: str) -> WavLMBackbone:
        """The same weights on another inference path (a converted copy; this backbone is unchanged)."""
        import copy

        if self.path != "eager":
            raise ValueError("convert from the eager (reference) backbone")
        model = copy.deepcopy(self._model)
        return WavLMBackbone(
            model, self._extractor, self.device, self._identifier, self.dim, self.window_s, path
        )

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        *,
        local_files_only: bool | None = None,
        device: str | None = None,
        path: str | None = None,
    ) -> WavLMBackbone:
        """See ``Backbone.load``; ``path`` picks the inference path (default ``$SRPL_CPU_PATH`` / auto)."""
        import torch
        from transformers import AutoFeatureExtractor, WavLMForXVector

        folder = _hub.resolve_model(MODEL_NAME, source, local_files_only=local_files_only)
        try:
            extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
            model = WavLMForXVector.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - safetensors/torch/json errors: all mean "unusable folder"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailableError(f"{folder}: cannot load WavLMForXVector ({reason})") from None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).eval()
        weights = next(folder / f for f in WEIGHT_FILES if (folder / f).is_file())
        # the content hash alone names the weights: the same file from the hub cache or from
        # --backbone-path gives the same id, so cached embeddings and tuned models stay usable
        digest = _hub.file_digest(weights)[:12]
        dim = int(model.config.xvector_output_dim)
        path = _cpu.resolve_path(device, path)
        return cls(model, extractor, device, f"{MODEL_NAME}:{digest}", dim, path=path)

    def embed(self, waves: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """Embed clips; long clips as the mean of ``window_s`` windows.

        Only segments of *equal* length share a forward pass (``equal_length_groups``), never padded:
        WavLM-base's first convolution normalises with a GroupNorm over the whole time axis, padding
        included, which the attention mask cannot undo (transformers #10117, #21534), so a padded clip's
        embedding would depend on its batch neighbours (cos 0.993 for a 2 s clip beside a 21 s one).
        """
        import torch

        segments: list[tuple[int, np.ndarray]] = []
        for i, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            if len(wave) < MIN_SAMPLES:  # the conv front end needs a few hundred samples
                wave = np.pad(wave, (0, MIN_SAMPLES - len(wave)))
            for seg in windows(wave, self.window_s):
                segments.append((i, seg))
        sums = np.zeros((len(waves), self.dim), dtype=np.float64)
        counts = np.zeros(len(waves), dtype=np.int64)
        sr = int(getattr(self._extractor, "sampling_rate", 16000))
        dtype = torch.bfloat16 if self.path == "bf16" else torch.float32
        with torch.inference_mode(), warnings.catch_warnings():
            # torch's note about transformers' mask types; harmless and not the user's business
            warnings.filterwarnings("ignore", message=".*key_padding_mask and attn_mask.*")
            for group in equal_length_groups([len(seg) for _, seg in segments], batch_size):
                inputs = self._extractor(
                    [segments[k][1] for k in group],
                    sampling_rate=sr,
                    return_attention_mask=True,
                    return_tensors="pt",
                )
                inputs["input_values"] = inputs["input_values"].to(dtype)
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                out = self._model(**inputs).embeddings.float()
                out = torch.nn.functional.normalize(out, dim=1).cpu().numpy()
                for k, row in zip(group, out, strict=True):
                    sums[segments[k][0]] += row
                    counts[segments[k][0]] += 1
        mean = sums / np.maximum(counts, 1)[:, None]
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def prepare_model(model: Any, path: str) -> Any:
    """Convert an eval-mode ``WavLMForXVector`` (in place) for an inference path (see ``_cpu.py``).

    ``bf16`` casts the weights (and, in ``embed``, the waveform) to bfloat16; ``fp32`` is the eager model
    (a 1-D convolution + transformer has no layout to gain from channels-last).
    """
    import torch

    if path not in _cpu.PATHS:
        raise ValueError(f"unknown inference path {path!r}")
    return model.to(torch.bfloat16) if path == "bf16" else model
