"""The ``tts`` engine: zero-shot voice cloning with SpeechT5 (transformers), conditioned on x-vectors.

Why SpeechT5 (``microsoft/speecht5_tts`` + ``microsoft/speecht5_hifigan``, both MIT licensed): it is
the one multi-speaker TTS model in transformers whose voice is set by a speaker *embedding* instead
of a fixed speaker id, it is small (~145 M + 13 M parameters) and runs on a CPU in a few seconds per
sentence. Its conditioning is a 512-d L2-normalised x-vector. SpeechT5 was trained with SpeechBrain
x-vectors, which transformers does not ship; we take the 512-d x-vector of
``microsoft/wavlm-base-plus-sv`` (``WavLMForXVector``, the project's ``wavlm`` backbone, already a
dependency path with hub resolution and caching), L2-normalised the same way. That embedding space
is not the one SpeechT5 saw in training, so cloning is approximate: the voices follow the
reference's broad traits but are not faithful copies. Any callable ``waves -> (n, 512)`` can be
passed as ``speaker_encoder`` instead.

Unknown voices come from other conditioning: random draws around the enrolled embeddings, Dirichlet
mixtures of several enrolled speakers, or interpolations between two of them (``unknown_embedding``).

The tokenizer: SpeechT5's ``spm_char.model`` is a character-level SentencePiece model, and the
``sentencepiece`` package is not a dependency of srpl. ``CharTokenizer`` reads the piece list from
that file with a 40-line protobuf reader and maps characters to ids exactly as the character model
does (``▁`` word boundaries, ``</s>`` appended), so no extra package is needed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.errors import DataError, ModelUnavailableError, UsageError

TTS_MODEL = "microsoft/speecht5_tts"
VOCODER_MODEL = "microsoft/speecht5_hifigan"
SAMPLE_RATE = 16000
SPM_FILE = "spm_char.model"
_WORD = "\u2581"  # SentencePiece's word-boundary mark

SpeakerEncoder = Callable[[Sequence[np.ndarray]], np.ndarray]


# --- sentences -----------------------------------------------------------------------------------
def builtin_sentences() -> list[str]:
    """The built-in sentences (written for srpl, public domain / CC0)."""
    text = resources.files("srpl_cli.synthesis").joinpath("sentences.txt").read_text(encoding="utf-8")
    return _parse_sentences(text)


def _parse_sentences(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]


def load_sentences(path: str | Path | None = None) -> list[str]:
    """One sentence per non-empty line of ``path`` (``#`` starts a comment); built-ins when ``None``."""
    if path is None:
        return builtin_sentences()
    path = Path(path)
    try:
        sentences = _parse_sentences(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the sentence file ({type(exc).__name__})") from None
    if not sentences:
        raise DataError(f"{path}: the sentence file has no sentences (one per line)")
    return sentences


# --- a sentencepiece-free character tokenizer ----------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) of a protobuf message (value: int or bytes)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wt == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, val


def read_spm_pieces(path: str | Path) -> list[tuple[str, int]]:
    """(piece, type) of every piece of a SentencePiece model file, in id order."""
    data = Path(path).read_bytes()
    pieces = []
    try:
        for num, wt, val in _fields(data):
            if num == 1 and wt == 2:  # ModelProto.pieces
                piece, kind = "", 1
                for n2, w2, v2 in _fields(val):
                    if n2 == 1 and w2 == 2:
                        piece = v2.decode("utf-8")
                    elif n2 == 3 and w2 == 0:
                        kind = v2
                pieces.append((piece, kind))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelUnavailableError(f"{path}: not a SentencePiece model ({exc})") from None
    if not pieces:
        raise ModelUnavailableError(f"{path}: the SentencePiece model has no pieces")
    return pieces


def write_spm_pieces(path: str | Path, pieces: Sequence[tuple[str, int]]) -> Path:
    """Write a minimal SentencePiece model (pieces only): used to build tiny test models."""

    def vint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    body = bytearray()
    for piece, kind in pieces:
        raw = piece.encode("utf-8")
        msg = b"\x0a" + vint(len(raw)) + raw + b"\x15" + b"\x00\x00\x00\x00" + b"\x18" + vint(kind)
        body += b"\x0a" + vint(len(msg)) + msg
    path = Path(path)
    path.write_bytes(bytes(body))
    return path


class CharTokenizer:
    """Text -> SpeechT5 input ids, equivalent to its character-level SentencePiece model."""

    def __init__(self, pieces: Sequence[tuple[str, int]]) -> None:
        self.vocab = {p: i for i, (p, kind) in enumerate(pieces) if kind in (1, 4)}  # normal, user-defined
        ids = {p: i for i, (p, _) in enumerate(pieces)}
        self.unk_id = ids.get("<unk>", 3)
        self.eos_id = ids.get("</s>", 2)

    @classmethod
    def from_file(cls, path: str | Path) -> CharTokenizer:
        return cls(read_spm_pieces(path))

    def encode(self, text: str) -> list[int]:
        text = " ".join(unicodedata.normalize("NFKC", text).split())
        out = []
        for ch in _WORD + text.replace(" ", _WORD):
            i = self.vocab.get(ch)
            if i is None:
                i = self.vocab.get(ch.lower(), self.unk_id)
            out.append(i)
        return out + [self.eos_id]


# --- model resolution ----------------------------------------------------------------------------
#: files a usable snapshot must hold (the hub cache can hold partial snapshots)
_REQUIRED = {
    TTS_MODEL: ("config.json", SPM_FILE),
    VOCODER_MODEL: ("config.json",),
}
_ALLOW = ["*.json", "*.model", "*.safetensors", "pytorch_model.bin", "*.md"]


def resolve_model_dir(repo_id: str, source: str | Path | None, local_files_only: bool | None) -> Path:
    """Explicit directory -> local hub cache -> network (unless offline); else ModelUnavailableError.

    The same rules as the hub backbones (``srpl_cli.backbones._hub``): caches from the current
    environment (``HF_HOME`` / ``HF_HUB_CACHE``), ``SRPL_OFFLINE`` / ``HF_HUB_OFFLINE`` or
    ``local_files_only`` never touch the network, and a 3 s probe turns "no network" into an
    immediate error instead of the hub client's retries.
    """
    from srpl_cli.backbones import _hub

    if source is not None:
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"{path}: not a model directory (no config.json)")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    hint = "use `--engine perturb` (needs no download), or fetch the model while online"
    required = _REQUIRED.get(repo_id, ("config.json",))
    kwargs: dict[str, Any] = {"cache_dir": _hub.hf_cache_dir(), "allow_patterns": _ALLOW}
    try:
        found = Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
        if all((found / f).is_file() for f in required):
            return found
    except LocalEntryNotFoundError:
        pass
    offline = _hub.offline_requested("huggingface") if local_files_only is None else local_files_only
    if offline:
        raise ModelUnavailableError(
            f"TTS model '{repo_id}' is not cached ({_hub.hf_cache_dir()}) and srpl is offline", hint
        )
    reason = _hub.probe(_hub.hub_endpoint("huggingface"))
    if reason is not None:
        raise ModelUnavailableError(f"TTS model '{repo_id}' is not cached and {reason}", hint)
    try:
        return Path(snapshot_download(repo_id, etag_timeout=10, **kwargs))
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear line
        raise ModelUnavailableError(
            f"TTS model '{repo_id}' could not be downloaded ({type(exc).__name__})", hint
        ) from None


def _wavlm_encoder(local_files_only: bool | None) -> SpeakerEncoder:
    from srpl_cli.backbones import get_backbone

    backbone = get_backbone("wavlm", local_files_only=local_files_only)
    return backbone.embed


class SpeechT5Engine:
    """SpeechT5 text-to-speech + HiFi-GAN vocoder + an x-vector speaker encoder."""

    def __init__(self, model: Any, vocoder: Any, tokenizer: CharTokenizer, speaker_encoder: SpeakerEncoder):
        self.model = model
        self.vocoder = vocoder
        self.tokenizer = tokenizer
        self.speaker_encoder = speaker_encoder
        self.embedding_dim = int(model.config.speaker_embedding_dim)

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        vocoder_source: str | Path | None = None,
        speaker_encoder: SpeakerEncoder | None = None,
        local_files_only: bool | None = None,
    ) -> SpeechT5Engine:
        model_dir = resolve_model_dir(TTS_MODEL, source, local_files_only)
        vocoder_dir = resolve_model_dir(VOCODER_MODEL, vocoder_source, local_files_only)
        spm = model_dir / SPM_FILE
        if not spm.is_file():
            raise ModelUnavailableError(
                f"{model_dir}: no {SPM_FILE} (the SpeechT5 tokenizer) in the model directory"
            )
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan  # slow import: only once found

        try:
            model = SpeechT5ForTextToSpeech.from_pretrained(model_dir).eval()
            vocoder = SpeechT5HifiGan.from_pretrained(vocoder_dir).eval()
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"cannot load the TTS model from {model_dir}: {exc}") from None
        encoder = speaker_encoder or _wavlm_encoder(local_files_only)
        return cls(model, vocoder, CharTokenizer.from_file(spm), encoder)

    def speaker_embedding(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Mean of the L2-normalised x-vectors of ``waves``, L2-normalised -> (dim,)."""
        emb = np.asarray(self.speaker_encoder(list(waves)), dtype=np.float64)
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise UsageError(
                f"speaker encoder gives {emb.shape[-1]}-d vectors; the TTS model needs {self.embedding_dim}-d"
            )
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        mean = emb.mean(axis=0)
        return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)

    def synthesize(
        self, text: str, embedding: np.ndarray, seed: int = 0, max_len_ratio: float = 20.0
    ) -> np.ndarray:
        """Speak ``text`` with the voice ``embedding`` -> float32 16 kHz waveform."""
        import torch

        ids = self.tokenizer.encode(text)
        # SpeechT5's decoder prenet keeps dropout on at inference: seed it, without touching global state
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            wave = self.model.generate_speech(
                torch.tensor([ids]),
                torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None],
                vocoder=self.vocoder,
                maxlenratio=max_len_ratio,
            )
        return wave.detach().cpu().numpy().astype(np.float32).reshape(-1)


def unknown_embedding(
    kind: str, known: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """A voice that is none of the enrolled speakers, from their embeddings ``known`` (K, dim).

    * ``random``: a Gaussian draw with the per-dimension mean and spread of the enrolled voices;
    * ``mix``: a Dirichlet-weighted mixture of all enrolled voices plus noise;
    * ``interpolate``: a point 30-70 % of the way between two enrolled voices.
    Returns the L2-normalised embedding and a JSON-able description for the manifest.
    """
    known = np.asarray(known, dtype=np.float64)
    k = len(known)
    spread = known.std(axis=0) if k > 1 else np.full(known.shape[1], 1.0 / np.sqrt(known.shape[1]))
    if kind == "random":
        e = known.mean(axis=0) + spread * rng.standard_normal(known.shape[1]) * 2.0
        info: dict[str, Any] = {"kind": kind}
    elif kind == "mix":
        w = rng.dirichlet(np.ones(k))
        e = w @ known + 0.5 * spread * rng.standard_normal(known.shape[1])
        info = {"kind": kind, "weights": [round(float(x), 4) for x in w]}
    elif kind == "interpolate":
        if k < 2:
            return unknown_embedding("random", known, rng)
        a, b = rng.choice(k, size=2, replace=False)
        t = float(rng.uniform(0.3, 0.7))
        e = (1 - t) * known[a] + t * known[b]
        info = {"kind": kind, "between": [int(a), int(b)], "t": round(t, 4)}
    else:
        raise UsageError(f"unknown voice kind '{kind}'; choose random, mix or interpolate")
    e = e / max(np.linalg.norm(e), 1e-12)
    return e.astype(np.float32), info


UNKNOWN_KINDS: tuple[str, ...] = ("mix", "interpolate", "random")


def download_tts_models() -> dict[str, Path]:
    """Fetch the TTS model and its vocoder into the Hugging Face cache (``srpl download --model speecht5``)."""
    return {repo: resolve_model_dir(repo, None, False) for repo in (TTS_MODEL, VOCODER_MODEL)}
