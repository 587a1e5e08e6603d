"""Where embedding extraction runs: in this process (the default) or on a Ray cluster (``--engine ray``).

``extract_embeddings`` hashes the clips, looks them up in the content-addressed cache and groups the
missing ones into batches; an executor embeds those batches and yields them back as they finish, and the
calling process writes each one to the cache as it lands. So both executors fill the same cache, a run
that stops half-way resumes where it stopped, and a second run embeds nothing.

The Ray executor runs the batches through Ray Data's ``map_batches`` over a pool of actors, each holding
one backbone: one actor per GPU when the cluster has GPUs, otherwise ``workers`` CPU actors. Ray was
chosen over hand-made multiprocessing because the same code then spans one machine or a cluster, with
scheduling, back-pressure and retries handled by a well-kept library. It is an optional extra
(``pip install 'srpl-cli[ray]'``) imported only here, inside functions.

Commands pick the executor through ``use_executor`` (a context, as joblib's ``parallel_config``), so the
pipeline functions between the CLI and ``embed_clips`` need no extra argument.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.errors import UsageError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
_CURRENT: ContextVar[Any] = ContextVar("srpl_executor", default=None)


class LocalExecutor:
    """Every batch in turn, in this process."""

    name = "local"

    def map_batches(
        self, batches: list[list[Path]], backbone: Any, min_speech_s: float
    ) -> Iterator[tuple[int, list]]:
        from srpl_cli.embeddings import embed_batch

        for b, paths in enumerate(batches):
            yield b, embed_batch(paths, backbone, min_speech_s)

    def close(self) -> None:
        pass


class _BackboneActor:
    """One backbone on a Ray worker; ``__call__`` embeds one batch of clips (one input row)."""

    def __init__(self, spec: dict[str, Any], identifier: str, threads: int) -> None:
        import torch

        from srpl_cli.backbones import get_backbone

        torch.set_num_threads(max(1, threads))
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        self.backbone = get_backbone(spec["name"], **kwargs)
        if self.backbone.identifier != identifier:  # another node, other weights: never mix them
            raise RuntimeError(
                f"worker loaded backbone {self.backbone.identifier}, the driver has {identifier}; "
                "install the same weights on every node"
            )

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from srpl_cli.embeddings import embed_batch

        metas, blobs = [], []
        for b, paths_json in zip(rows["batch"], rows["paths"], strict=True):
            outcomes = embed_batch(
                [Path(p) for p in json.loads(str(paths_json))], self.backbone, float(rows["min_speech"][0])
            )
            emb = np.stack(
                [e if e is not None else np.zeros(self.backbone.dim, np.float32) for e, _, _ in outcomes]
            ).astype(np.float32)
            metas.append(
                json.dumps(
                    {
                        "batch": int(b),
                        "qualities": [q.to_dict() if q is not None else None for _, q, _ in outcomes],
                        "problems": [r for _, _, r in outcomes],
                    }
                )
            )
            blobs.append(emb.tobytes())
        return {"meta": np.array(metas, dtype=object), "embeddings": np.array(blobs, dtype=object)}


class RayExecutor:
    """Batches through Ray Data ``map_batches`` over a pool of backbone actors.

    ``address``: an existing cluster (``ray://host:10001``, ``host:6379`` or ``auto``); ``None`` reads
    ``RAY_ADDRESS`` and, when that is unset too, starts a local Ray for this run. ``workers``: the number of
    actors (default: one per GPU if the cluster has GPUs, else one per CPU). ``gpus_per_worker`` /
    ``cpus_per_worker``: what each actor reserves; its torch uses ``cpus_per_worker`` threads.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False

    def _ray(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,  # stdout stays for results (--json)
                    logging_level=logging.WARNING,
                    ignore_reinit_error=True,
                    **self.init_kwargs,
                )
            except ConnectionError as exc:
                raise UsageError(f"cannot reach the Ray cluster at {self.address}: {exc}") from None
            self._started = True
        # srpl's own progress bar counts the clips; Ray Data's bars and progress logs would only add noise
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        return ray

    def pool(self, ray: Any) -> tuple[int, float, float]:
        """(actors, CPUs and GPUs reserved by each) for the cluster in hand."""
        res = ray.cluster_resources()
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if res.get("GPU", 0) >= 1 else 0.0
        if self.workers is not None:
            n = self.workers
        elif gpus > 0:
            n = int(res.get("GPU", 0) // gpus)
        else:
            n = int(res.get("CPU", 1) // max(self.cpus_per_worker, 1e-9))
        if n < 1:
            raise UsageError(f"the Ray cluster has no room for a worker ({dict(res)})")
        return n, float(self.cpus_per_worker), float(gpus)

    def map_batches(
        self, batches: list[list[Path]], backbone: Any, min_speech_s: float
    ) -> Iterator[tuple[int, list]]:
        from srpl_cli.audio import AudioQuality

        if not batches:
            return
        spec = getattr(backbone, "load_spec", None)
        if spec is None:
            raise UsageError(
                f"backbone {backbone.identifier} was not loaded by name, so Ray workers cannot load it; "
                "use srpl_cli.backbones.get_backbone"
            )
        ray = self._ray()
        n, cpus, gpus = self.pool(ray)
        rows = [
            {
                "batch": b,
                "paths": json.dumps([str(Path(p).absolute()) for p in paths]),
                "min_speech": min_speech_s,
            }
            for b, paths in enumerate(batches)
        ]
        # one row per batch, one block per row: the batches stay exactly as planned, and spread over actors
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(
            _BackboneActor,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(n, len(rows))),
            fn_constructor_kwargs={
                "spec": spec,
                "identifier": backbone.identifier,
                "threads": max(1, int(cpus)),
            },
            num_cpus=cpus,
            num_gpus=gpus,
            batch_format="numpy",
        )
        log.info(
            "embedding %d batch(es) on Ray: %d worker(s), %g CPU / %g GPU each", len(rows), n, cpus, gpus
        )
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for meta_json, blob in zip(out["meta"], out["embeddings"], strict=True):
                meta = json.loads(str(meta_json))
                emb = np.frombuffer(blob, dtype=np.float32).reshape(len(meta["problems"]), backbone.dim)
                outcomes = [
                    (emb[k].copy(), AudioQuality(**{**q, "warnings": tuple(q.get("warnings", ()))}), None)
                    if r is None
                    else (None, None, r)
                    for k, (q, r) in enumerate(zip(meta["qualities"], meta["problems"], strict=True))
                ]
                yield meta["batch"], outcomes

    def close(self) -> None:
        """Shut down the Ray instance this executor started (a cluster it joined keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part used
    except ImportError:
        raise UsageError(
            "--engine ray needs Ray Data, which is not installed", hint="pip install 'srpl-cli[ray]'"
        ) from None
    return ray


def make_executor(engine: str = "local", address: str | None = None, workers: int | None = None) -> Any:
    """The executor for ``--engine``; ``--ray-address`` / ``--workers`` only apply to Ray."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    if engine == "local":
        if address is not None or workers is not None:
            raise UsageError("--ray-address and --workers only apply to --engine ray")
        return LocalExecutor()
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    import_ray()  # fail before any audio work when the extra is missing
    return RayExecutor(address=address, workers=workers)


@contextmanager
def use_executor(executor: Any) -> Iterator[Any]:
    """Run the embedding done inside this block on ``executor``; closes it on the way out."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)
        executor.close()


def current_executor() -> Any:
    """The executor set by the innermost ``use_executor``, or ``None`` (embed in this process)."""
    return _CURRENT.get()
