"""Synthetic speech for SRPL+: speaker variants and pseudo-unknown voices (``srpl synthesize``).

Engines: ``perturb`` (signal transforms, offline) and ``tts`` (SpeechT5 zero-shot cloning); the
selection policy in ``select``; the orchestration and output folder in ``run``. Submodules import
their heavy dependencies lazily, so importing this package is cheap.
"""

from __future__ import annotations

from srpl_cli.synthesis.run import (
    ENGINES,
    Candidate,
    SynthesisReport,
    perturb_candidates,
    read_synthetic,
    synthesize,
)
from srpl_cli.synthesis.select import SelectionParams, SelectionResult, select

__all__ = [
    "ENGINES",
    "Candidate",
    "SelectionParams",
    "SelectionResult",
    "SynthesisReport",
    "perturb_candidates",
    "read_synthetic",
    "select",
    "synthesize",
]
