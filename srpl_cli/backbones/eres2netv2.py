"""ERes2NetV2 (192-d), the default backbone: ModelScope ``iic/speech_eres2netv2_sv_zh-cn_16k-common``.

Chen et al., "ERes2NetV2: Boosting Short-Duration Speaker Verification Performance with Computational
Efficiency" (Interspeech 2024), 3D-Speaker / ModelScope. Front end as in modelscope's
``SpeakerVerificationERes2NetV2``: 80-bin Kaldi fbank (16 kHz, dither 0) minus its mean over time.

The network class is the one the ``modelscope`` package ships (``models/audio/sv/ERes2NetV2.py``), not a
rewrite. Importing that module the normal way runs ``modelscope.models.__init__``, which builds the whole
model registry (2+ s) and, with modelscope >= 1.38, fails outright unless optional extras such as
``addict`` are installed. So we execute the shipped file (and its two sibling files ``pooling_layers.py``
and ``fusion.py``, which import only torch) with the file's ``modelscope.*`` registry imports answered by
inert stand-ins: the classes' code is byte-for-byte modelscope's. modelscope's pipeline is never used.
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.audio import DEFAULT_WINDOW_S, windows
from srpl_cli.backbones import _cpu, _hub
from srpl_cli.backbones.base import Backbone, equal_length_groups
from srpl_cli.errors import ModelUnavailableError

MODEL_NAME = "eres2netv2"
CHECKPOINT = "pretrained_eres2netv2.ckpt"
N_MELS = 80
#: architecture of the hub checkpoint (3D-Speaker ERes2NetV2 "common": width 26, scale 2, expansion 2)
DEFAULT_CONFIG: dict[str, int] = {
    "embed_dim": 192,
    "baseWidth": 26,
    "scale": 2,
    "expansion": 2,
    "feat_dim": 80,
}

_SHIPPED: dict[str, Any] = {}


class _Inert:
    """Stand-in for modelscope registry objects: any attribute is a name, any call a no-op decorator."""

    def __getattr__(self, name: str) -> str:
        return name

    def register_module(self, *args: Any, **kwargs: Any) -> Any:
        return lambda cls: cls


def _exec_module_file(qualname: str, path: Path, substitutes: dict[str, Any]) -> types.ModuleType:
    """Execute a source file as a fresh module whose ``import``s of ``substitutes`` get the stand-ins."""
    real_import = builtins.__import__

    def _import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level == 0 and name in substitutes:
            obj = substitutes[name]
            if fromlist:
                return obj
            # ``import a.b.c as x`` walks attributes from the top package: give it that chain
            for part in reversed(name.split(".")[1:]):
                obj = types.SimpleNamespace(**{part: obj})
            return obj
        return real_import(name, globals, locals, fromlist, level)

    module = types.ModuleType(qualname)
    module.__file__ = str(path)
    module.__dict__["__builtins__"] = {**builtins.__dict__, "__import__": _import}
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    exec(code, module.__dict__)  # noqa: S102 - the installed modelscope package's own source
    return module


def shipped_model_class() -> type:
    """modelscope's ``ERes2NetV2`` class, loaded from the installed package's source file."""
    if "cls" in _SHIPPED:
        return _SHIPPED["cls"]
    import torch

    spec = importlib.util.find_spec("modelscope")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the ERes2NetV2 model class ships with the 'modelscope' package, which is not installed; "
            "pip install modelscope, or use `--backbone dvector`"
        )
    sv = Path(next(iter(spec.submodule_search_locations))) / "models" / "audio" / "sv"
    files = {n: sv / f"{n}.py" for n in ("pooling_layers", "fusion", "ERes2NetV2")}
    absent = [str(p) for p in files.values() if not p.is_file()]
    if absent:
        raise ModelUnavailableError(
            f"this modelscope version lacks {', '.join(absent)}; use `--backbone dvector`"
        )
    prefix = "srpl_cli._shipped.modelscope_sv"
    pooling = _exec_module_file(f"{prefix}.pooling_layers", files["pooling_layers"], {})
    fusion = _exec_module_file(f"{prefix}.fusion", files["fusion"], {})
    substitutes = {
        "modelscope.models.audio.sv.pooling_layers": pooling,
        "modelscope.models.audio.sv.fusion": fusion,
        "modelscope.metainfo": types.SimpleNamespace(Models=_Inert()),
        "modelscope.models": types.SimpleNamespace(MODELS=_Inert(), TorchModel=torch.nn.Module),
        "modelscope.utils.constant": types.SimpleNamespace(Tasks=_Inert()),
        "modelscope.utils.device": types.SimpleNamespace(create_device=torch.device),
    }
    try:
        module = _exec_module_file(f"{prefix}.ERes2NetV2", files["ERes2NetV2"], substitutes)
        cls = module.ERes2NetV2
    except Exception as exc:  # noqa: BLE001 - an incompatible modelscope release
        raise ModelUnavailableError(
            f"cannot load ERes2NetV2 from {files['ERes2NetV2']} ({type(exc).__name__}: {exc}); "
            "use `--backbone dvector`"
        ) from None
    _SHIPPED["cls"] = cls
    return cls


def read_config(folder: Path) -> tuple[dict[str, int], str]:
    """Architecture arguments and checkpoint name from the hub's ``configuration.json`` (if present)."""
    config = dict(DEFAULT_CONFIG)
    checkpoint = CHECKPOINT
    path = folder / "configuration.json"
    if path.is_file():
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"{path}: unreadable configuration ({exc})") from None
        model = meta.get("model", {}) if isinstance(meta, dict) else {}
        mc = model.get("model_config", {}) if isinstance(model, dict) else {}
        if isinstance(mc, dict):
            aliases = {"embedding_size": "embed_dim", "fbank_dim": "feat_dim"}
            for key, value in mc.items():
                key = aliases.get(key, key)
                if key in config and isinstance(value, int):
                    config[key] = value
            if isinstance(mc.get("m_channels"), int):
                config["m_channels"] = mc["m_channels"]
        if isinstance(model, dict) and isinstance(model.get("pretrained_model"), str):
            checkpoint = model["pretrained_model"]
    return config, checkpoint


class ERes2NetV2Backbone(Backbone):
    """ERes2NetV2 speaker embeddings (192-d for the hub model), L2-normalised."""

    name = MODEL_NAME
    dim = 192

    def __init__(
        self,
        model: Any,
        device: str,
        identifier: str,
        dim: int,
        window_s: float = DEFAULT_WINDOW_S,
        path: str = "eager",
    ) -> None:
        self._model = prepare_model(model, path)
        self.device = device
        self._identifier = identifier
        self.dim = dim  # type: ignore[misc]  # instance value: a local model may differ from 192
        self.window_s = window_s
        self.path = path

    def with_path(self, path: str) -> ERes2NetV2Backbone:
        """The same weights on another inference path (a converted copy; this backbone is unchanged)."""
        import copy

        if self.path != "eager":
            raise ValueError("convert from the eager (reference) backbone")
        model = copy.deepcopy(self._model)
        return ERes2NetV2Backbone(model, self.device, self._identifier, self.dim, self.window_s, path)

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        *,
        local_files_only: bool | None = None,
        device: str | None = None,
        path: str | None = None,
    ) -> ERes2NetV2Backbone:
        """See ``Backbone.load``; ``path`` picks the inference path (default ``$SRPL_CPU_PATH`` / auto)."""
        import torch

        folder = _hub.resolve_model(MODEL_NAME, source, local_files_only=local_files_only)
        config, ckpt_name = read_config(folder)
        ckpt = folder / ckpt_name
        if not ckpt.is_file():
            ckpt = folder / CHECKPOINT
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable / not a weights-only checkpoint
            raise ModelUnavailableError(f"{ckpt}: not a readable ERes2NetV2 checkpoint ({exc})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or "conv1.weight" not in state:
            raise ModelUnavailableError(f"{ckpt}: not an ERes2NetV2 state dict")
        # hub configs do not state m_channels; the first conv's width does
        config.setdefault("m_channels", int(state["conv1.weight"].shape[0]))
        model_cls = shipped_model_class()
        model = model_cls(
            m_channels=config["m_channels"],
            feat_dim=config["feat_dim"],
            embed_dim=config["embed_dim"],
            baseWidth=config["baseWidth"],
            scale=config["scale"],
            expansion=config["expansion"],
        )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0]
            raise ModelUnavailableError(
                f"{ckpt}: weights do not fit ERes2NetV2 {config} ({reason})"
            ) from None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).eval()
        # the content hash alone names the weights: the same file from the hub cache or from
        # --backbone-path gives the same id, so cached embeddings and tuned models stay usable
        digest = _hub.file_digest(ckpt)[:12]
        path = _cpu.resolve_path(device, path)
        return cls(model, device, f"{MODEL_NAME}:{digest}", config["embed_dim"], path=path)

    @staticmethod
    def features(wave: np.ndarray) -> Any:
        """80-bin Kaldi fbank (25 ms / 10 ms, dither 0) minus its mean over time: (frames, 80)."""
        import torch
        import torchaudio.compliance.kaldi as kaldi

        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).unsqueeze(0)
        if x.shape[1] < 400:  # one 25 ms frame at least
            x = torch.nn.functional.pad(x, (0, 400 - x.shape[1]))
        feat = kaldi.fbank(x, num_mel_bins=N_MELS, sample_frequency=16000, dither=0.0)
        return feat - feat.mean(dim=0, keepdim=True)

    def embed(self, waves: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Embed clips; long clips as the mean of ``window_s`` windows.

        Only segments of *equal* frame count share a forward pass (``equal_length_groups``): the network
        has no padding mask, so padding would make a clip's embedding depend on its batch neighbours.
        """
        import torch

        segments: list[tuple[int, Any]] = []
        for i, wave in enumerate(waves):
            for seg in windows(np.asarray(wave, dtype=np.float32), self.window_s):
                segments.append((i, self.features(seg)))
        sums = np.zeros((len(waves), self.dim), dtype=np.float64)
        counts = np.zeros(len(waves), dtype=np.int64)
        dtype = torch.bfloat16 if self.path == "bf16" else torch.float32
        with torch.inference_mode():
            for group in equal_length_groups([f.shape[0] for _, f in segments], batch_size):
                batch = torch.stack([segments[k][1] for k in group]).to(self.device, dtype)
                out = self._model(batch).float()
                out = torch.nn.functional.normalize(out, dim=1).cpu().numpy()
                for k, row in zip(group, out, strict=True):
                    idx = segments[k][0]
                    sums[idx] += row
                    counts[idx] += 1
        mean = sums / np.maximum(counts, 1)[:, None]
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def prepare_model(model: Any, path: str) -> Any:
    """Convert an eval-mode ERes2NetV2 (in place) for an inference path (see ``_cpu.py``).

    ``fp32``/``bf16``: channels-last weights, so oneDNN's convolutions run on blocked layouts without a
    reorder per layer (1.5x on a 2-core EPYC, same numbers); ``bf16`` also casts weights (and, in ``embed``,
    inputs) to bfloat16: with native bf16 FMAs the convolutions run about 2x fp32 eager in all.
    """
    import torch

    if path == "eager":
        return model
    if path not in _cpu.PATHS:
        raise ValueError(f"unknown inference path {path!r}")
    model = model.to(memory_format=torch.channels_last)
    return model.to(torch.bfloat16) if path == "bf16" else model
