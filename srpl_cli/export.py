"""ONNX export of a tuned model (backbone + open-set backend) for deployment with onnxruntime.

The artifact is a folder that needs neither srpl nor torch:

- ``backbone.onnx``: one audio segment (batch of equal-length segments) -> L2-normalised embedding. The
  graph is the eager fp32 reference path (onnxruntime does its own CPU optimisation). ERes2NetV2 takes
  Kaldi fbank features, as WeSpeaker's and 3D-Speaker's ONNX runtimes do (fbank is not an ONNX operator
  set that exports faithfully; every device SDK has a Kaldi-compatible fbank); WavLM takes the waveform.
- ``backend.onnx``: embeddings (n, dim) -> per-speaker scores (n, K); the highest score is the open-set
  score, and a clip is "unknown" below ``threshold`` in ``model.json``.
- ``model.json``: class names, threshold, front end and windowing, so a device engineer can reproduce
  ``srpl identify``; ``README.md`` says the same in prose.

Every export is checked before it is written: onnxruntime must reproduce the PyTorch path on a probe
(cos >= 0.99999 for embeddings, |diff| <= 1e-4 for scores), otherwise nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli._version import __version__
from srpl_cli.errors import DataError, UsageError

OPSET = 17
EMBEDDING_MIN_COS = 0.99999
SCORE_MAX_DIFF = 1e-4


@dataclass(frozen=True)
class ExportReport:
    path: str
    backbone: str
    backbone_id: str
    backend: str
    speakers: int
    threshold: float
    embedding_cos: float
    score_max_diff: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- backbone graphs
def _backbone_graph(backbone: Any) -> tuple[Any, str, dict[str, Any], Any]:
    """(torch module, input name, front-end description, probe input) for the backbone's reference path."""
    import torch

    class Normalised(torch.nn.Module):
        def __init__(self, net: Any, kind: str, normalize_wave: bool) -> None:
            super().__init__()
            self.net, self.kind, self.normalize_wave = net, kind, normalize_wave

        def forward(self, x: Any) -> Any:
            if self.kind == "wavlm":
                if self.normalize_wave:  # the feature extractor's zero-mean unit-variance step
                    x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-7)
                out = self.net(input_values=x).embeddings
            else:
                out = self.net(x)
            return torch.nn.functional.normalize(out.float(), dim=1)

    if getattr(backbone, "path", "eager") != "eager":
        raise UsageError("export the eager (reference) backbone: load it with path='eager'")
    rng = np.random.default_rng(0)
    probe_wave = (0.1 * rng.standard_normal(3 * 16000)).astype(np.float32)
    if backbone.name == "eres2netv2":
        probe = backbone.features(probe_wave).unsqueeze(0).numpy()
        frontend = {
            "input": "fbank",
            "shape": ["batch", "frames", 80],
            "features": "Kaldi fbank, 80 mel bins, 25 ms frames every 10 ms, povey window, dither 0, "
            "16 kHz mono float samples in [-1, 1], then minus its mean over time (per segment)",
            "min_samples": 400,
        }
        return Normalised(backbone._model, "eres2netv2", False), "fbank", frontend, probe
    if backbone.name == "wavlm":
        from srpl_cli.backbones.wavlm import MIN_SAMPLES

        normalize_wave = bool(getattr(backbone._extractor, "do_normalize", False))
        frontend = {
            "input": "waveform",
            "shape": ["batch", "samples"],
            "features": "16 kHz mono float samples in [-1, 1]"
            + ("; the graph normalises each segment to zero mean, unit variance" if normalize_wave else ""),
            "min_samples": MIN_SAMPLES,
        }
        return Normalised(backbone._model, "wavlm", normalize_wave), "waveform", frontend, probe_wave[None]
    raise UsageError(
        f"ONNX export supports the eres2netv2 and wavlm backbones; this model uses {backbone.name}"
    )


# ---------------------------------------------------------------- backend graphs
#: backends ``_backend_graph`` can write as ONNX
EXPORTABLE_BACKENDS = ("cosine", "anchored-cosine", "as-norm", "srpl")


def _backend_graph(backend: Any) -> Any:
    """A torch module computing ``backend.decision_function`` from its fitted state (float32)."""
    import torch

    def t(a: Any) -> Any:
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    def unit(x: Any) -> Any:
        return torch.nn.functional.normalize(x, dim=1, eps=1e-12)

    name = backend.name
    if name == "cosine":

        class Cosine(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("centers", t(backend.centers_))

            def forward(self, x: Any) -> Any:
                return unit(x) @ self.centers.T

        return Cosine()
    if name == "anchored-cosine":

        class Anchored(torch.nn.Module):
            """``AnchoredCosineBackend._decision_function``: cosine identity, whitened anchored score."""

            def __init__(self) -> None:
                super().__init__()
                for attr in ("centers", "basis", "gain", "prototypes", "anchors", "offsets"):
                    self.register_buffer(attr, t(getattr(backend, f"{attr}_")))
                self.weight = float(backend.anchor_weight)

            def forward(self, x: Any) -> Any:
                z = unit(x)
                cos = z @ self.centers.T
                zt = unit(z + ((z @ self.basis.T) * self.gain) @ self.basis) if self.basis.shape[0] else z
                anchored = zt @ self.prototypes.T - self.weight * (zt @ self.anchors.T).amax(1, keepdim=True)
                open_set = (anchored - self.offsets[None, :]).amax(1, keepdim=True)
                return cos - cos.amax(1, keepdim=True) + open_set

        return Anchored()
    if name == "as-norm":

        class ASNorm(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("centers", t(backend.centers_))
                self.register_buffer("cohort", t(backend.cohort_))
                self.top = max(2, min(int(backend.top_n), len(backend.cohort_)))

            def stats(self, e: Any) -> tuple[Any, Any]:
                top = torch.topk(unit(e) @ self.cohort.T, self.top, dim=1).values
                mean = top.mean(1)
                sd = torch.sqrt(((top - mean[:, None]) ** 2).mean(1)).clamp_min(1e-6)
                return mean, sd

            def forward(self, x: Any) -> Any:
                s = unit(x) @ self.centers.T
                mu_x, sd_x = self.stats(x)
                mu_m, sd_m = self.stats(self.centers)
                return 0.5 * ((s - mu_x[:, None]) / sd_x[:, None] + (s - mu_m[None, :]) / sd_m[None, :])

        return ASNorm()
    if name == "srpl":

        class Reciprocal(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.head = backend.head_.cpu().float().eval()
                self.register_buffer("points", backend.criterion_.points.detach().float().cpu())

            def forward(self, x: Any) -> Any:
                return -(self.head(x) @ self.points.T)

        return Reciprocal()
    raise UsageError(f"ONNX export does not know the '{name}' backend")


# ---------------------------------------------------------------- export
def _onnx_export(module: Any, probe: np.ndarray, path: Path, input_name: str, output_name: str) -> None:
    import torch

    dynamic = {input_name: {0: "batch"}, output_name: {0: "batch"}}
    if probe.ndim >= 2 and input_name != "embedding":
        dynamic[input_name][1] = "frames" if input_name == "fbank" else "samples"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python branches
        torch.onnx.export(
            module.eval(),
            (torch.from_numpy(probe),),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(
    out: str | Path, backbone: Any, backend: Any, info: dict[str, Any] | None = None
) -> ExportReport:
    """Write ``backbone`` + fitted ``backend`` to the folder ``out`` (which must not exist yet).

    The folder is built beside ``out`` and renamed into place once both graphs pass the onnxruntime check,
    so an interrupted or failed export leaves nothing behind.
    """
    import importlib.util

    import torch

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"srpl export needs {' and '.join(missing)}: pip install 'srpl-cli[export]'")
    out = Path(out)
    if out.exists():
        raise UsageError(f"{out} already exists; choose a new folder for the export")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a folder")
    backend.check_is_fitted()
    if getattr(backend, "n_features_in_", backbone.dim) != backbone.dim:
        raise DataError(
            f"the backend expects {backend.n_features_in_}-d embeddings, the backbone gives {backbone.dim}-d"
        )
    info = info or {}
    net, input_name, frontend, probe = _backbone_graph(backbone)
    head = _backend_graph(backend)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".incomplete", dir=out.parent))
    try:
        _onnx_export(net, probe, build / "backbone.onnx", input_name, "embedding")
        with torch.no_grad():
            emb = net(torch.from_numpy(probe)).numpy()
        got = _session(build / "backbone.onnx").run(None, {input_name: probe})[0]
        cos = float(np.min(np.sum(emb * got, axis=1)))
        if not cos >= EMBEDDING_MIN_COS:
            raise DataError(f"onnxruntime does not reproduce the backbone (cos {cos:.6f}); not exported")
        rng = np.random.default_rng(1)
        X = np.vstack([emb, rng.standard_normal((7, backbone.dim))]).astype(np.float32)
        _onnx_export(head, X, build / "backend.onnx", "embedding", "scores")
        ref = np.asarray(backend.decision_function(X), dtype=np.float32)
        scores = _session(build / "backend.onnx").run(None, {"embedding": X})[0]
        diff = float(np.max(np.abs(ref - scores)))
        if not diff <= SCORE_MAX_DIFF:
            raise DataError(f"onnxruntime does not reproduce the backend (|diff| {diff:.2e}); not exported")
        meta = {
            "format": "srpl-onnx/1",
            "srpl_version": __version__,
            "backbone": backbone.name,
            "backbone_id": backbone.identifier,
            "embedding_dim": int(backbone.dim),
            "frontend": {
                **frontend,
                "sample_rate": 16000,
                "window_s": float(getattr(backbone, "window_s", 0.0) or 0.0),
            },
            "backend": backend.name,
            "classes": [str(c) for c in backend.classes_],
            "threshold": float(backend.threshold_),
            "checked": {"embedding_min_cos": cos, "score_max_abs_diff": diff, "onnx_opset": OPSET},
            "tuned": {k: info[k] for k in ("created", "shots", "method", "seed") if k in info},
        }
        (build / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (build / "README.md").write_text(readme(meta), encoding="utf-8")
        os.replace(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return ExportReport(
        path=str(out),
        backbone=backbone.name,
        backbone_id=backbone.identifier,
        backend=backend.name,
        speakers=len(meta["classes"]),
        threshold=meta["threshold"],
        embedding_cos=cos,
        score_max_diff=diff,
    )


def export_model(
    out: str | Path,
    workspace: Any = None,
    model_name: str = "default",
    backbone_source: str | Path | None = None,
) -> ExportReport:
    """Export the workspace's tuned model ``model_name`` (its backbone loaded on the eager path)."""
    from srpl_cli import pipeline
    from srpl_cli.model_backbone import load_model_backbone

    backend, info, _ = pipeline.load_model(workspace, model_name)
    if info.get("backbone") not in ("eres2netv2", "wavlm"):
        raise UsageError(
            f"ONNX export supports the eres2netv2 and wavlm backbones; model '{model_name}' uses "
            f"{info.get('backbone')}"
        )
    if backend.name not in EXPORTABLE_BACKENDS:  # before loading the backbone, which can take a while
        raise UsageError(
            f"ONNX export supports the {', '.join(EXPORTABLE_BACKENDS)} methods; model '{model_name}' "
            f"uses {backend.name}"
        )
    backbone = load_model_backbone(
        info, f"model '{model_name}'", backbone_source, strict=True, device="cpu", path="eager"
    )
    return export_onnx(out, backbone, backend, info)


def readme(meta: dict[str, Any]) -> str:
    """The artifact's README: what goes in, what comes out, how to decide."""
    fe = meta["frontend"]
    window = fe["window_s"]
    shape = ", ".join(str(s) for s in fe["shape"])
    names = ", ".join(meta["classes"][:20]) + (" ..." if len(meta["classes"]) > 20 else "")
    return f"""# srpl speaker model ({meta["backbone"]} + {meta["backend"]}), ONNX

Exported by srpl {meta["srpl_version"]} from backbone `{meta["backbone_id"]}`. Runtime: onnxruntime
(CPU or any execution provider), opset {meta["checked"]["onnx_opset"]}. Checked at export: onnxruntime
vs PyTorch, embedding cos >= {meta["checked"]["embedding_min_cos"]:.6f}, score |diff| <=
{meta["checked"]["score_max_abs_diff"]:.1e}.

## backbone.onnx

- input `{fe["input"]}`: float32 [{shape}]. {fe["features"]}. Segments shorter than
  {fe["min_samples"]} samples are zero-padded to that length first.
- output `embedding`: float32 [batch, {meta["embedding_dim"]}], L2-normalised.
- A batch holds segments of *equal* length only (never pad to batch: the network would see the padding).
- Clips longer than {window:g} s: split into the fewest equal-length windows of at most {window:g} s,
  embed each, average the embeddings and L2-normalise the mean.

## backend.onnx

- input `embedding`: float32 [n, {meta["embedding_dim"]}] (the clip embeddings above).
- output `scores`: float32 [n, {len(meta["classes"])}], one column per speaker in the order of
  `classes` in model.json ({names}).
- Decision: best = argmax(scores); the speaker is `classes[best]` if `scores[best] >= threshold`
  ({meta["threshold"]:.6f}, in model.json), else unknown.

## Python example

```python
import json, numpy as np, onnxruntime as ort
meta = json.load(open("model.json"))
backbone = ort.InferenceSession("backbone.onnx")
backend = ort.InferenceSession("backend.onnx")
x = ...  # {fe["input"]} of one segment, float32 [1, {shape.split(", ", 1)[1]}]
emb = backbone.run(None, {{"{fe["input"]}": x}})[0]
scores = backend.run(None, {{"embedding": emb}})[0][0]
best = int(scores.argmax())
print(meta["classes"][best] if scores[best] >= meta["threshold"] else "unknown")
```
"""
