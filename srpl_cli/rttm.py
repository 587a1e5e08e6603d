"""NIST RTTM, the plain-text "who spoke when" format diarization tools read and write.

One ``SPEAKER`` line per segment: ``SPEAKER <file-id> 1 <start> <duration> <NA> <NA> <name> <NA> <NA>``
(times in seconds). Ten whitespace-separated fields, so file ids and names must not contain whitespace:
they are written with ``_`` in its place. Written by hand (a format this small does not justify a
dependency); the tests check that pyannote.database's ``load_rttm`` reads it back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from srpl_cli.errors import DataError


@dataclass(frozen=True)
class RttmTurn:
    file_id: str
    start: float
    duration: float
    speaker: str


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


def parse_rttm(text: str, source: str | Path = "<rttm>") -> list[RttmTurn]:
    """``SPEAKER`` lines of an RTTM text (other types, blank lines and ``;;`` comments are skipped)."""
    turns = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith(";;") or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise DataError(f"{source}:{n}: an RTTM SPEAKER line has 10 fields, this one {len(fields)}")
        try:
            turns.append(RttmTurn(fields[1], float(fields[3]), float(fields[4]), fields[7]))
        except ValueError:
            raise DataError(f"{source}:{n}: start and duration must be numbers") from None
    return turns
