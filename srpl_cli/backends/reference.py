"""Read the SpeakerRPL authors' released files without executing code.

- :func:`safe_torch_load`: ``torch.load(weights_only=True)`` with only numpy's array-reconstruction globals
  allowed, so the authors' ``.npy`` files that are really ``torch.save`` pickles of numpy arrays load, and
  anything that would need more (arbitrary classes, code) is refused with a DataError.
- :func:`load_reference_checkpoint`: ``ClassifierAdapt_SRPL_.pth`` (the MLP head, DataParallel ``module.``
  keys) + ``ClassifierAdapt_SRPL__criterion.pth`` (``points``, ``Dist2.centers``, ``radius``) into an
  :class:`~srpl_cli.backends.srpl.SRPLBackend` that saves and loads in our own format afterwards.

How the released points map to speakers: the authors' scripts hard-code 15 reciprocal points and label
the known speakers 0..4 directly, so point k belongs to speaker k and points 5..14 were trained without
any speaker (cross-entropy only pushed them away). Their evaluation takes argmax and max over all 15
logits, and that is what the published numbers measure: on qspeech-wavlm (known 0-4, unknown 40-49)
all 15 points give ACC 97.209, AUROC 95.726, legacy OSCR 94.251 (exactly the paper's figures), while
only the first 5 give ACC 99.535, AUROC 98.058, legacy OSCR 97.685. Hence ``classes=None`` keeps every
point (classes 0..14, the published scoring) and ``classes=[...]`` of length k keeps the first k points.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from srpl_cli.errors import DataError

if TYPE_CHECKING:
    from srpl_cli.backends.srpl import SRPLBackend

MODEL_FILE = "ClassifierAdapt_SRPL_.pth"
CRITERION_FILE = "ClassifierAdapt_SRPL__criterion.pth"


@functools.cache
def _numpy_safe_globals() -> list[Any]:
    """numpy's reconstruct function (under both its 1.x and 2.x names), ndarray, dtype and dtype classes."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    rec = multiarray._reconstruct
    allowed: list[Any] = [
        rec,
        (rec, "numpy.core.multiarray._reconstruct"),
        (rec, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` a file with ``weights_only=True`` onto the CPU, also allowing plain numpy arrays.

    Raises DataError (naming the file) for anything that is not tensors / numpy arrays / plain containers.
    """
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise DataError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - the unpickler fails in many ways on non-torch bytes (KeyError, ...)
        first = type(exc).__name__ + (f": {str(exc).strip().splitlines()[0]}" if str(exc).strip() else "")
        raise DataError(
            f"{path}: refused to load: not a plain tensor/numpy file that loads without running code ({first[:200]})"
        ) from None


def _state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: expected a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_reference_checkpoint(path: str | Path, classes: Any = None) -> SRPLBackend:
    """An SRPLBackend holding the authors' released head and reciprocal points from directory ``path``.

    ``classes=None`` keeps all released points (labels 0..P-1, the published scoring); a sequence of k
    labels keeps the first k points and names them.
    """
    import torch

    from srpl_cli.backends.srpl import SRPLBackend, reference_layer_names

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory holding {MODEL_FILE} and {CRITERION_FILE}")
    for name in (MODEL_FILE, CRITERION_FILE):
        if not (path / name).is_file():
            raise DataError(f"{path}: missing {name} (not an SRPL reference checkpoint directory)")
    net = _state_dict(safe_torch_load(path / MODEL_FILE), path / MODEL_FILE)
    crit = _state_dict(safe_torch_load(path / CRITERION_FILE), path / CRITERION_FILE)

    points = crit.get("points", crit.get("Dist.centers"))
    if points is None or "radius" not in crit or points.ndim != 2:
        raise DataError(f"{path / CRITERION_FILE}: expected 'points' (P, d) and 'radius' tensors")
    q_points = crit.get("Dist2.centers", torch.zeros_like(points))

    n_blocks = 0
    while f"{reference_layer_names(n_blocks + 1)[-1][0]}.weight" in net:
        n_blocks += 1
    if n_blocks == 0:
        raise DataError(f"{path / MODEL_FILE}: no 'fc1.weight' (not an SRPL head)")
    names = reference_layer_names(n_blocks)
    dims = [int(net[f"{fc}.weight"].shape[0]) for fc, _ in names]
    in_dim = int(net["fc1.weight"].shape[1])
    state: dict[str, Any] = {}
    for i, (fc, bn) in enumerate(names):
        state[f"{3 * i}.weight"] = net[f"{fc}.weight"]
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if f"{bn}.{key}" not in net:
                raise DataError(f"{path / MODEL_FILE}: missing '{bn}.{key}'")
            state[f"{3 * i + 1}.{key}"] = net[f"{bn}.{key}"]
    if points.shape[1] != dims[-1]:
        raise DataError(f"{path}: points have dimension {points.shape[1]}, the head outputs {dims[-1]}")

    n_points = int(points.shape[0])
    if classes is None:
        labels = np.arange(n_points)
    else:
        labels = np.asarray(list(classes))
        if labels.ndim != 1 or not 1 <= len(labels) <= n_points or len(np.unique(labels)) != len(labels):
            raise DataError(f"classes must be 1 to {n_points} distinct labels, got {len(labels)}")
    k = len(labels)

    model = SRPLBackend(hidden_dims=tuple(dims))
    model.classes_ = labels
    model.n_features_in_ = in_dim
    model._build(in_dim, k)
    try:
        model.head_.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{path / MODEL_FILE}: weights do not fit the SRPL head ({exc})") from None
    with torch.no_grad():
        model.criterion_.points.copy_(points[:k].float())
        model.criterion_.q_points.copy_(q_points[:k].float())
        model.criterion_.radius.copy_(crit["radius"].reshape(1).float())
    model.head_.eval()
    model.criterion_.eval()
    # Training pushes each known sample's own logit -f.P_y above 1 - R (the radius margin term);
    # without enrollment data that is the only threshold the checkpoint itself implies.
    model.threshold_ = float(1.0 - model.criterion_.radius.item())
    model.metadata_ = {"source": "SpeakerRPL reference checkpoint", "path": str(path)}
    model.loss_curve_ = []
    return model
