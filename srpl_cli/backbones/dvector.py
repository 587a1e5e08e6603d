"""GE2E d-vector (256-d): the speaker encoder whose weights ship inside the ``resemblyzer`` wheel.

Wan et al., "Generalized End-to-End Loss for Speaker Verification" (ICASSP 2018); weights from
resemblyzer (Corentin Jemine). We read ``resemblyzer/pretrained.pt`` from the installed package without
importing it: resemblyzer's import chain reaches ``webrtcvad``, which needs ``pkg_resources``, gone
from current setuptools. The encoder (LSTM(40, 256, 3) -> Linear(256, 256) -> ReLU -> L2 norm) and
``VoiceEncoder.embed_utterance`` are reproduced here: volume normalised to -30 dBFS (increase only),
long silences trimmed (Silero VAD replaces webrtcvad, same 30 ms windows, smoothing and dilation: cosine
to resemblyzer's own embeddings of 200 LibriSpeech clips min 0.953 / median 0.9974 / mean 0.9955, where
the energy detector gave 0.886 / 0.9962 / 0.9928; bench/dvector_reference.py),
40-bin mel power frames (25 ms / 10 ms, librosa's slaney mel), 1.6 s partials at 1.3 per second
(min coverage 0.75), mean of the partial embeddings, L2-normalised. Fully offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.audio import DEFAULT_WINDOW_S, mean_square, windows
from srpl_cli.backbones.base import Backbone
from srpl_cli.errors import ModelUnavailableError
from srpl_cli.vad import regions_mask, speech_regions

SAMPLE_RATE = 16000
N_MELS = 40
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_RATE = 1.3
MIN_COVERAGE = 0.75
NORM_TARGET_DBFS = -30.0
VAD_WINDOW = 480  # 30 ms
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6
HIDDEN = 256
EMBED_DIM = 256
N_LAYERS = 3
#: Partials sent through the LSTM in one forward pass (bounds memory, whatever the clip lengths).
MAX_PARTIALS_PER_BATCH = 256
WEIGHTS_NAME = "pretrained.pt"


def packaged_weights() -> Path | None:
    """Path of ``resemblyzer/pretrained.pt`` without executing the package (``find_spec`` only)."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    return None


def _resemblyzer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("resemblyzer")
    except PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def normalize_volume(wave: np.ndarray, target_dbfs: float = NORM_TARGET_DBFS) -> np.ndarray:
    """Raise (never lower) the level to ``target_dbfs`` RMS, as resemblyzer's preprocess does."""
    rms = float(np.sqrt(mean_square(wave)))
    if rms <= 0.0:
        return wave
    change_db = target_dbfs - 20.0 * np.log10(rms)
    if change_db < 0:
        return wave
    return (wave * (10.0 ** (change_db / 20.0))).astype(np.float32)


def trim_long_silences(wave: np.ndarray) -> np.ndarray:
    """Drop silences longer than ~0.2 s: resemblyzer's algorithm with Silero VAD as the detector.

    resemblyzer flags each 30 ms window with webrtcvad, smooths the flags (moving average of 8, rounded)
    and dilates them by 6 windows. Here a window is flagged when Silero's speech regions cover at
    least half of it; smoothing and dilation are resemblyzer's.

    The VAD runs here even though ``audio.validate`` ran it on the same clip: its input differs (raised
    to -30 dBFS, cut to whole 30 ms windows) and Silero is not level-invariant (on 19 LibriSpeech clips,
    a gain of 0.5 / 2 / 5 changed the regions of 4 / 3 / 7; the cut changed 1 of 37), so reusing the
    first regions would change the embeddings and with them the cache's meaning.
    """
    n = len(wave) - len(wave) % VAD_WINDOW
    if n < VAD_WINDOW:
        return wave
    wave = wave[:n]
    covered = regions_mask(speech_regions(wave, SAMPLE_RATE), n).reshape(-1, VAD_WINDOW).mean(axis=1)
    flags = (covered >= 0.5).astype(np.float64)
    width = VAD_AVERAGE_WIDTH
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    smooth = np.convolve(padded, np.ones(width) / width, mode="valid")
    mask = np.round(smooth).astype(bool)
    kernel = np.ones(VAD_MAX_SILENCE + 1)
    mask = np.convolve(mask.astype(np.float64), kernel, mode="same") > 0.5
    keep = np.repeat(mask, VAD_WINDOW)
    trimmed = wave[keep]
    # A clip the VAD finds (almost) no speech in is kept whole rather than embedded from nothing.
    return trimmed if len(trimmed) >= PARTIAL_FRAMES * HOP // 4 else wave


def preprocess(wave: np.ndarray) -> np.ndarray:
    """resemblyzer's ``preprocess_wav`` for a 16 kHz waveform: volume normalisation, then trimming."""
    wave = np.asarray(wave, dtype=np.float32)
    return trim_long_silences(normalize_volume(wave))


def partial_starts(
    n_samples: int, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE
) -> list[int]:
    """First mel frame of each 1.6 s partial (``VoiceEncoder.compute_partial_slices``)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLE_RATE / rate) / HOP))
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    starts = list(range(0, steps, frame_step))
    last = starts[-1] * HOP
    coverage = (n_samples - last) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


def _encoder_module() -> Any:
    import torch
    from torch import nn

    class GE2EEncoder(nn.Module):
        """resemblyzer's ``VoiceEncoder`` network (same parameter names, so its state dict loads)."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, HIDDEN, N_LAYERS, batch_first=True)
            self.linear = nn.Linear(HIDDEN, EMBED_DIM)
            self.relu = nn.ReLU()

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            e = self.relu(self.linear(hidden[-1]))
            return e / torch.norm(e, dim=1, keepdim=True).clamp_min(1e-12)

    return GE2EEncoder()


class DVectorBackbone(Backbone):
    """GE2E d-vector from the resemblyzer wheel's weights (256-d, L2-normalised, non-negative)."""

    name = "dvector"
    dim = EMBED_DIM
    #: 2: silences trimmed with Silero VAD instead of the energy detector
    frontend_version = 2

    def __init__(
        self, encoder: Any, device: str, identifier: str, window_s: float = DEFAULT_WINDOW_S
    ) -> None:
        self._encoder = encoder
        self.device = device
        self._identifier = identifier
        self.window_s = window_s
        self._mel_basis: Any = None
        self._window: Any = None

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        *,
        local_files_only: bool | None = None,
        device: str | None = None,
    ) -> DVectorBackbone:
        """Load the weights file ``source`` (a file, or a folder holding ``pretrained.pt``) or the packaged one.

        Never touches the network, so ``local_files_only`` changes nothing.
        """
        import torch

        if source is not None:
            path = Path(source)
            if path.is_dir():
                path = path / WEIGHTS_NAME
            if not path.is_file():
                raise ModelUnavailableError(f"d-vector weights not found: {path}")
            packaged = packaged_weights()
            version = (
                f"resemblyzer-{_resemblyzer_version()}"
                if packaged is not None and packaged.resolve() == path.resolve()
                else "local"
            )
        else:
            found = packaged_weights()
            if found is None:
                raise ModelUnavailableError(
                    "the d-vector weights ship with the 'resemblyzer' package, which is not installed",
                    hint="pip install resemblyzer (srpl reads its weights file; it never imports it)",
                )
            path, version = found, f"resemblyzer-{_resemblyzer_version()}"
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not usable weights"
            raise ModelUnavailableError(f"{path}: not a readable d-vector weights file ({exc})") from None
        state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ModelUnavailableError(f"{path}: not a GE2E d-vector checkpoint (no model_state)")
        # similarity_weight/bias belong to the GE2E training loss, not to the encoder
        state = {k: v for k, v in state.items() if not k.startswith("similarity_")}
        encoder = _encoder_module()
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0]
            raise ModelUnavailableError(f"{path}: weights do not fit the GE2E encoder ({reason})") from None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        encoder.to(device).eval()
        return cls(encoder, device, f"dvector:{version}:{_sha256(path)[:12]}")

    def mel_frames(self, wave: np.ndarray) -> Any:
        """40-bin mel power spectrogram (frames, 40): librosa's ``melspectrogram`` defaults in torch."""
        import torch
        import torchaudio.functional as AF

        if self._mel_basis is None:
            self._mel_basis = AF.melscale_fbanks(
                N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
            )
            self._window = torch.hann_window(N_FFT, periodic=True)
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        spec = torch.stft(
            x,
            N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self._window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (freq, frames)
        return power.T @ self._mel_basis  # (frames, 40)

    def _partials(self, segment: np.ndarray) -> Any:
        """All 1.6 s partial mel windows of one segment: (k, 160, 40)."""
        starts = partial_starts(len(segment))
        need = (starts[-1] + PARTIAL_FRAMES) * HOP
        if need >= len(segment):
            segment = np.pad(segment, (0, need - len(segment)))
        mel = self.mel_frames(segment)
        return mel.unfold(0, PARTIAL_FRAMES, 1)[starts].transpose(1, 2)

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Embed each clip as the L2-normalised mean of its partial embeddings.

        Every partial is exactly 160 frames, so partials of clips of any length share one batch with no
        padding; long clips are cut into ``window_s`` windows first so memory stays bounded.
        """
        import torch

        sums = np.zeros((len(waves), EMBED_DIM), dtype=np.float64)
        counts = np.zeros(len(waves), dtype=np.int64)
        pending: list[tuple[int, Any]] = []
        n_pending = 0

        def flush() -> None:
            nonlocal n_pending
            if not pending:
                return
            batch = torch.cat([m for _, m in pending]).to(self.device)
            with torch.inference_mode():
                out = self._encoder(batch).float().cpu().numpy()
            pos = 0
            for idx, m in pending:
                k = m.shape[0]
                sums[idx] += out[pos : pos + k].sum(axis=0)
                counts[idx] += k
                pos += k
            pending.clear()
            n_pending = 0

        with torch.inference_mode():
            for i, wave in enumerate(waves):
                clean = preprocess(wave)
                for segment in windows(clean, self.window_s):
                    mels = self._partials(segment)
                    for start in range(0, mels.shape[0], MAX_PARTIALS_PER_BATCH):
                        chunk = mels[start : start + MAX_PARTIALS_PER_BATCH]
                        pending.append((i, chunk))
                        n_pending += chunk.shape[0]
                        if n_pending >= MAX_PARTIALS_PER_BATCH:
                            flush()
            flush()
        mean = sums / np.maximum(counts, 1)[:, None]
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.maximum(norms, 1e-12)).astype(np.float32)
