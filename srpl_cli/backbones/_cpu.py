"""Which inference path a backbone runs: the eager fp32 reference, or the fast CPU path.

Paths (``SRPL_CPU_PATH``, or ``precision=`` in ``Backbone.load``):

- ``eager``: the reference path: the model as its authors ship it, fp32. Always used on a GPU.
- ``fp32``: the fast fp32 CPU path (channels-last memory layout for the convolutional networks, so oneDNN
  runs its blocked kernels without reordering every tensor). Same numbers within cos >= 0.99999, so it
  shares the embedding cache with ``eager``.
- ``bf16``: the fp32 path with weights and activations in bfloat16. It changes the numbers (cos >= 0.9999
  to fp32), so ``:bf16`` is part of the backbone identifier (the cache key). Only chosen where the CPU
  computes bfloat16 natively (``avx512_bf16`` or ``amx_bf16``); elsewhere oneDNN emulates it, slower than
  fp32, and ``bf16`` falls back to ``fp32`` with a warning.
- ``auto`` (default): ``bf16`` on a CPU with native bfloat16, else ``fp32``.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from srpl_cli.errors import UsageError

log = logging.getLogger(__name__)

PATHS = ("eager", "fp32", "bf16")
ENV = "SRPL_CPU_PATH"
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16() -> bool:
    """True when this CPU has bfloat16 arithmetic in hardware and torch's oneDNN can use it."""
    if not _NATIVE_BF16_FLAGS & cpu_flags():
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_path(device: str, requested: str | None = None) -> str:
    """The path to run on ``device``: ``requested`` (or ``$SRPL_CPU_PATH``, default ``auto``) made concrete."""
    choice = (requested or os.environ.get(ENV) or "auto").strip().lower()
    if choice not in (*PATHS, "auto"):
        raise UsageError(f"{ENV}={choice!r} is not a CPU path; choose one of: auto, {', '.join(PATHS)}")
    if not str(device).startswith("cpu"):
        return "eager"  # the GPU runs the reference path
    if choice == "auto":
        return "bf16" if native_bf16() else "fp32"
    if choice == "bf16" and not native_bf16():
        log.warning("this CPU has no native bfloat16 (avx512_bf16/amx_bf16): using the fp32 path instead")
        return "fp32"
    return choice
