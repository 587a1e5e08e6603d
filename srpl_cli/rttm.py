"""NIST RTTM, the plain-text "who spoke when" format diarization tools read and write.

One ``SPEAKER`` line per segment: ``SPEAKER <file-id> 1 <start> <duration> <NA> <NA> <name> <NA> <NA>``
(times in seconds). Ten whitespace-separated fields, so file ids and names must not contain whitespace:
they are written with ``_`` in its place. Written by hand (a format this small does not justify a
dependency); srpl only writes it, and the tests check that pyannote.database's ``load_rttm`` reads it
back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def rttm_token(text: str) -> str:
    """``text`` as one RTTM field: whitespace becomes ``_``; empty becomes ``<NA>``."""
    token = re.sub(r"\s+", "_", text.strip())
    return token or "<NA>"


def format_rttm(file_id: str, turns: Iterable[tuple[float, float, str]]) -> str:
    """RTTM text for ``(start, end, speaker)`` turns of one recording (one line each, ms precision)."""
    fid = rttm_token(file_id)
    lines = []
    for start, end, speaker in turns:
        lines.append(
            f"SPEAKER {fid} 1 {start:.3f} {max(0.0, end - start):.3f} <NA> <NA> {rttm_token(speaker)} <NA> <NA>"
        )
    return "".join(line + "\n" for line in lines)
