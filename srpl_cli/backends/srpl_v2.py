"""SpeakerRPL v2: reciprocal points with LogitNorm, anchors for the unknown space, a fused ensemble.

What the v2 recipe (arXiv 2604.13605) adds to faithful SRPL (:mod:`srpl_cli.backends.srpl`, kept
unchanged for reproduction), and how it is built here for 5 x 5 enrollments:

- **LogitNorm in the reciprocal-points objective** (:class:`LogitNormAnchorLoss` in
  :mod:`srpl_cli.backends.losses`): each logit vector is divided by its norm and a temperature before
  the cross-entropy, so training cannot win by inflating every logit, which is how a head trained on 25
  clips becomes confidently wrong about voices it never heard.
- **Extra anchor points for the unknown space.** Besides one reciprocal point per speaker (logit
  ``-(f . P_k)``, unit points) the head holds M anchor points whose logits compete with the speakers';
  unknown samples are pulled to the anchor group, enrolled clips to their speaker. A speaker's score is
  its logit minus ``anchor_weight`` times the best anchor logit.
- **Fusion of several seeded models**: ``n_models`` heads with different initial anchors, residual
  noise and unknown samples are trained together (one batched loop) and their scores averaged.

**Unknown samples.** With ``X_unknown`` (in-domain negatives: clips of people who are not enrolled, e.g.
a deployment's unlabeled pool minus the clips that clearly belong to an enrolled speaker) the anchors
start on a random subset of them (another subset per model) and every model trains on them. Without,
an embedding-space generator makes pseudo-unknowns from the enrollment (``synthetic``): mixtures of two
enrolled prototypes (voices between two speakers), extrapolations beyond a prototype away from another,
or prototypes pushed off along random directions to a between-speaker similarity ("sphere").
Extrapolations are the default: the only generator that did not lose to cosine on qspeech (fold seeds
0-1, docs/accuracy.md, "srpl-v2"). ``pool_negatives`` makes ``tune`` / ``evaluate`` pass a pool's
strangers (``srpl_cli.pool.in_domain_negatives``) as ``X_unknown``.

**Why it is built this way (lessons from docs/accuracy.md).** Trained heads on 5 clips per speaker lost
to cosine whenever they could move far from it. So the model *starts* at the closed-form default
(:mod:`srpl_cli.backends.anchored_cosine`): features are the enrollment-whitened, normalised embeddings;
reciprocal points start at minus the whitened prototypes (so ``-(f . P_k)`` is the cosine to speaker
k); the anchors start at prototype mixtures (and pool clips); the learnt residual ``I + A`` on the
features starts at the identity. Full-batch Adam with a small learning rate and an L2 pull back to
the starting point keeps it near there unless the data say otherwise.

**Speed.** Everything is computed in an orthonormal basis of the span of the training data (enrollment,
unknowns, anchors): a clip's cosine to a point in that span needs only its coordinates there and its
norm. The residual acts on the enrollment span only (at most n clips wide). One fit (5 models x
``steps`` full-batch steps, batched) takes about 0.2 s of CPU for 5 x 5 clips and 0.5 s with a 240-clip
pool (one core), so the cross-fitted calibration of ``srpl tune`` / ``srpl evaluate`` (about 11-13
fits) stays practical.

Identity defaults to plain cosine against the mean enrollment embedding (``identity="cosine"``: the
argmax of ``decision_function`` is cosine's, the max is the fused open-set score), as in the default
backend; ``identity="head"`` lets the fused head decide both.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from srpl_cli.backends.anchored_cosine import _anchors, _normalise, _prototypes, _transform, _whitening
from srpl_cli.backends.base import OpenSetClassifier
from srpl_cli.errors import DataError

SYNTHETIC = ("mix", "extrapolate", "sphere", "mix+sphere", "none")
SCORES = ("margin", "logodds")
IDENTITIES = ("cosine", "head")


def _orthonormal_rows(M: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis (r, d) of the row span of ``M`` (empty when M is)."""
    if len(M) == 0:
        return np.zeros((0, M.shape[1]))
    # eigen-decomposition of the smaller Gram matrix: robust to duplicated rows (an SVD may not converge)
    if len(M) < M.shape[1]:
        ev, U = np.linalg.eigh(M @ M.T)
        keep = ev > tol * max(1.0, float(ev.max()))
        return (U[:, keep].T @ M) / np.sqrt(ev[keep])[:, None]
    ev, V = np.linalg.eigh(M.T @ M)
    return V[:, ev > tol * max(1.0, float(ev.max()))].T


class SRPLv2Backend(OpenSetClassifier):
    """SpeakerRPL v2 head (see the module docstring) on enrollment-whitened embeddings.

    Parameters
    ----------
    shrinkage:
        Within-speaker whitening as in ``anchored-cosine`` (1 switches it off).
    n_models:
        Seeded heads trained together and averaged (fusion).
    steps, lr:
        Full-batch Adam steps and learning rate.
    temperature:
        LogitNorm temperature (smaller = sharper).
    decay:
        Weight of the L2 pull of every parameter back to its starting point (identity residual,
        prototype points, initial anchors).
    residual:
        Learn the residual ``I + A`` on the features (on the enrollment span); False trains points only.
    unknown_weight:
        Weight of the unknown samples' term in the loss.
    anchor_mix:
        Position of the mixture anchors between two prototypes (as in ``anchored-cosine``).
    anchor_weight, pool_weight:
        Share of the best anchor logit subtracted from each speaker's logit (``score="margin"``), for the
        anchors started on prototype mixtures and for those started on unknown samples. Real in-domain
        strangers are worth a full penalty; mixtures of enrolled voices only a part of one.
    n_pool_anchors:
        Anchors started on unknown samples (a different random subset per model), when there are any.
    synthetic:
        Pseudo-unknown generator used when there are no unknown samples: one of ``mix``,
        ``extrapolate``, ``sphere``, ``mix+sphere`` or ``none``.
    n_synthetic:
        Pseudo-unknowns drawn per model.
    max_unknown:
        Unknown samples used per model (a random subset of a larger pool, for speed).
    score:
        ``margin``: logit minus weighted best anchor logit; ``logodds``: LogitNorm log-probability of
        the speaker minus that of the anchor group.
    identity:
        ``cosine`` (who = plain cosine) or ``head`` (who = the fused head).
    random_state:
        Seed of everything random (initial noise, anchor subsets, pseudo-unknowns); deterministic.
    """

    name: ClassVar[str] = "srpl-v2"
    #: trains on a pool's in-domain strangers (``srpl_cli.pool.in_domain_negatives``) as its unknown samples
    pool_negatives: ClassVar[bool] = True

    def __init__(
        self,
        shrinkage: float = 0.8,
        n_models: int = 5,
        steps: int = 100,
        lr: float = 0.002,
        temperature: float = 0.05,
        decay: float = 1.0,
        residual: bool = True,
        unknown_weight: float = 1.0,
        anchor_mix: float = 0.5,
        anchor_weight: float = 0.6,
        pool_weight: float = 1.0,
        n_pool_anchors: int = 16,
        synthetic: str = "extrapolate",
        n_synthetic: int = 64,
        max_unknown: int = 128,
        score: str = "margin",
        identity: str = "cosine",
        random_state: int | None = 0,
    ) -> None:
        self.shrinkage = shrinkage
        self.n_models = n_models
        self.steps = steps
        self.lr = lr
        self.temperature = temperature
        self.decay = decay
        self.residual = residual
        self.unknown_weight = unknown_weight
        self.anchor_mix = anchor_mix
        self.anchor_weight = anchor_weight
        self.pool_weight = pool_weight
        self.n_pool_anchors = n_pool_anchors
        self.synthetic = synthetic
        self.n_synthetic = n_synthetic
        self.max_unknown = max_unknown
        self.score = score
        self.identity = identity
        self.random_state = random_state

    def _check_params(self) -> None:
        checks = [
            (0.0 < float(self.shrinkage) <= 1.0, f"shrinkage must be in (0, 1], got {self.shrinkage}"),
            (int(self.n_models) >= 1, f"n_models must be at least 1, got {self.n_models}"),
            (int(self.steps) >= 0, f"steps must be >= 0, got {self.steps}"),
            (float(self.lr) > 0, f"lr must be positive, got {self.lr}"),
            (float(self.temperature) > 0, f"temperature must be positive, got {self.temperature}"),
            (float(self.decay) >= 0, f"decay must be >= 0, got {self.decay}"),
            (0.0 <= float(self.anchor_mix) <= 1.0, f"anchor_mix must be in [0, 1], got {self.anchor_mix}"),
            (int(self.n_pool_anchors) >= 0, f"n_pool_anchors must be >= 0, got {self.n_pool_anchors}"),
            (int(self.n_synthetic) >= 0, f"n_synthetic must be >= 0, got {self.n_synthetic}"),
            (int(self.max_unknown) >= 1, f"max_unknown must be at least 1, got {self.max_unknown}"),
            (self.synthetic in SYNTHETIC, f"synthetic must be one of {', '.join(SYNTHETIC)}"),
            (self.score in SCORES, f"score must be one of {', '.join(SCORES)}"),
            (self.identity in IDENTITIES, f"identity must be one of {', '.join(IDENTITIES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(message)

    # ---- pseudo-unknowns ----
    def _synthetic(self, P: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n_synthetic, d) unit pseudo-unknowns made from the whitened prototypes ``P`` (K, d)."""
        n, K = int(self.n_synthetic), len(P)
        if self.synthetic == "none" or n == 0:
            return np.zeros((0, P.shape[1]))
        kinds = self.synthetic.split("+")
        per = [n // len(kinds) + (1 if i < n % len(kinds) else 0) for i in range(len(kinds))]
        out = []
        sim = P @ P.T
        between = float(sim[~np.eye(K, dtype=bool)].mean())  # typical cosine of two enrolled speakers
        for kind, m in zip(kinds, per, strict=True):
            i = rng.integers(K, size=m)
            j = (i + rng.integers(1, K, size=m)) % K  # another speaker
            if kind == "mix":
                lam = rng.uniform(0.25, 0.75, size=(m, 1))
                out.append(lam * P[i] + (1 - lam) * P[j])
            elif kind == "extrapolate":
                alpha = rng.uniform(0.3, 1.0, size=(m, 1))
                out.append(P[i] + alpha * (P[i] - P[j]))
            else:  # sphere: a random direction orthogonal to p_i, at a between-speaker cosine to it
                g = rng.normal(size=(m, P.shape[1]))
                g -= (g * P[i]).sum(1, keepdims=True) * P[i]
                g = _normalise(g)
                c = np.clip(between + rng.uniform(-0.1, 0.1, size=(m, 1)), -0.99, 0.99)
                out.append(c * P[i] + np.sqrt(1 - c**2) * g)
        return _normalise(np.concatenate(out))

    # ---- fitting ----
    def _fit(self, X: np.ndarray, y: np.ndarray, X_unknown: np.ndarray | None) -> None:
        self._check_params()
        K = len(self.classes_)
        seed = int(self.random_state) if self.random_state is not None else None
        rng = np.random.default_rng(seed)
        Z = _normalise(X.astype(np.float64))
        self.centers_ = _prototypes(Z, y, K)
        self.basis_w_, self.gain_w_ = _whitening(Z, y, K, float(self.shrinkage))
        Zw = _transform(Z, self.basis_w_, self.gain_w_)
        P = _prototypes(Zw, y, K)
        mix = _anchors(P, float(self.anchor_mix))
        S = int(self.n_models)

        # unknown samples per model: a subset of the real ones, or pseudo-unknowns
        if X_unknown is not None:
            Uw = _transform(_normalise(X_unknown.astype(np.float64)), self.basis_w_, self.gain_w_)
            m = min(len(Uw), int(self.max_unknown))
            unknowns = [Uw[rng.choice(len(Uw), size=m, replace=False)] for _ in range(S)]
            n_pool = min(int(self.n_pool_anchors), len(Uw))
            pool_anchors = [Uw[rng.choice(len(Uw), size=n_pool, replace=False)] for _ in range(S)]
        else:
            unknowns = [self._synthetic(P, rng) for _ in range(S)]
            pool_anchors = [np.zeros((0, Z.shape[1])) for _ in range(S)]
        anchors = [np.concatenate([mix, a]) for a in pool_anchors]

        # one orthonormal basis for everything the models see: enrollment span first (the residual's)
        B_e = _orthonormal_rows(Zw)
        rest = np.concatenate([*unknowns, *pool_anchors, mix])
        rest = rest - (rest @ B_e.T) @ B_e
        B = np.concatenate([B_e, _orthonormal_rows(rest)])
        self.basis_, self.n_residual_ = B, len(B_e)
        self.anchor_weights_ = np.concatenate(
            [
                np.full(len(mix), float(self.anchor_weight)),
                np.full(len(pool_anchors[0]), float(self.pool_weight)),
            ]
        )
        self._train(Zw @ B.T, y, [u @ B.T for u in unknowns], P @ B.T, [a @ B.T for a in anchors], seed)

    def _train(
        self,
        C: np.ndarray,
        y: np.ndarray,
        unknowns: list[np.ndarray],
        P0: np.ndarray,
        anchors0: list[np.ndarray],
        seed: int | None,
    ) -> None:
        """Train the ``n_models`` heads together (leading dimension S) in basis coordinates."""
        import torch

        from srpl_cli.backends.losses import build_losses

        S, re, K = len(unknowns), int(self.n_residual_), len(P0)
        gen = torch.Generator()
        gen.manual_seed(seed if seed is not None else int(np.random.default_rng().integers(2**31)))
        f32 = torch.float32
        U = torch.as_tensor(np.stack(unknowns), dtype=f32)  # (S, m, r): every model has as many
        inputs = torch.cat([torch.as_tensor(C, dtype=f32).expand(S, -1, -1), U], 1)
        labels = torch.cat([torch.as_tensor(y), torch.full((U.shape[1],), -1)]).long()
        W0 = torch.as_tensor(
            np.stack([-np.concatenate([P0, a]) for a in anchors0]), dtype=f32
        )  # (S, K + M, r): reciprocal points = minus the prototypes / anchors
        A0 = torch.zeros(S, re, re)
        if self.residual and S > 1:  # a little noise so the fused heads differ beyond their data
            A0 = 0.01 * torch.randn(S, re, re, generator=gen) / max(re, 1) ** 0.5
        W = torch.nn.Parameter(W0.clone())
        A = torch.nn.Parameter(A0.clone())
        params = [W, A] if self.residual else [W]
        crit = build_losses()["LogitNormAnchorLoss"](K, float(self.temperature), float(self.unknown_weight))
        opt = torch.optim.Adam(params, lr=float(self.lr))
        decay = float(self.decay)
        curve = []
        with torch.enable_grad():
            for _ in range(int(self.steps)):
                opt.zero_grad()
                logits = self._logits_t(inputs, torch.zeros(inputs.shape[:2]), W, A)
                # the loss averages over models; times S, each model's gradient is its own loss's
                loss = S * crit(logits, labels) + decay * ((W - W0).pow(2).sum() + (A - A0).pow(2).sum())
                loss.backward()
                opt.step()
                curve.append(float(loss.detach()) / S)
        self.points_ = W.detach().double().numpy()
        self.residual_ = A.detach().double().numpy()
        self.loss_curve_ = curve

    def _logits_t(self, c: Any, out2: Any, W: Any, A: Any) -> Any:
        """Torch logits (S, n, K + M): ``-(f . w / |w|)`` for the normalised residual feature ``f``."""
        import torch

        re = A.shape[-1]
        if self.residual and re:
            lead = torch.broadcast_shapes(c.shape[:-2], A.shape[:-2])
            c = c.expand(*lead, *c.shape[-2:])
            g = torch.cat([c[..., :re] + c[..., :re] @ A, c[..., re:]], dim=-1)
        else:
            g = c
        f = g / torch.sqrt(g.pow(2).sum(-1, keepdim=True) + out2.unsqueeze(-1)).clamp_min(1e-7)
        return -(f @ (W / W.norm(dim=-1, keepdim=True).clamp_min(1e-7)).transpose(-1, -2))

    # ---- scoring ----
    def open_set_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, K) fused per-speaker scores of the heads (their max is the open-set score)."""
        import torch

        Zw = _transform(_normalise(np.asarray(X, dtype=np.float64)), self.basis_w_, self.gain_w_)
        c = Zw @ self.basis_.T
        out2 = np.clip(1.0 - (c**2).sum(1), 0.0, None)  # the clip's mass outside the model's span
        K = len(self.classes_)
        with torch.no_grad():
            logits = self._logits_t(
                torch.as_tensor(c).unsqueeze(0),
                torch.as_tensor(out2).unsqueeze(0),
                torch.as_tensor(self.points_),
                torch.as_tensor(self.residual_),
            ).numpy()  # (S, n, K + M)
        speakers, anchors = logits[..., :K], logits[..., K:]
        if self.score == "margin":
            per_model = speakers - (anchors * self.anchor_weights_).max(-1, keepdims=True)
        else:
            z = logits / (np.linalg.norm(logits, axis=-1, keepdims=True) * float(self.temperature))
            top = z.max(-1, keepdims=True)
            lse = np.log(np.exp(z[..., K:] - top).sum(-1, keepdims=True)) + top
            per_model = z[..., :K] - lse
        return per_model.mean(0)

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        fused = self.open_set_scores(X)
        if self.identity == "head":
            return fused
        cos = _normalise(X.astype(np.float64)) @ self.centers_.T
        return cos - cos.max(axis=1, keepdims=True) + fused.max(axis=1, keepdims=True)

    # ---- persistence ----
    _ARRAYS = ("centers", "basis_w", "gain_w", "basis", "points", "residual", "anchor_weights")

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {n: np.asarray(getattr(self, f"{n}_"), dtype=np.float64) for n in self._ARRAYS}
        extra = {"n_residual": int(self.n_residual_), "loss_curve": [float(v) for v in self.loss_curve_]}
        return arrays, extra

    def _set_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        missing = [n for n in self._ARRAYS if n not in arrays]
        if missing:
            raise DataError(f"saved srpl-v2 model lacks the array(s) {', '.join(missing)}")
        for n in self._ARRAYS:
            setattr(self, f"{n}_", np.asarray(arrays[n], dtype=np.float64))
        try:
            self.n_residual_ = int(extra["n_residual"])
        except (KeyError, TypeError, ValueError):
            raise DataError("saved srpl-v2 model lacks its residual size (meta.json extra)") from None
        self.loss_curve_ = list(extra.get("loss_curve", []))
        d, K = self.n_features_in_, len(self.classes_)
        r, re = len(self.basis_), self.n_residual_
        if (
            self.centers_.shape != (K, d)
            or self.basis_.shape != (r, d)
            or self.points_.ndim != 3
            or self.points_.shape[2] != r
            or self.points_.shape[1] <= K
            or self.residual_.shape != (len(self.points_), re, re)
            or self.gain_w_.shape != self.basis_w_.shape[:1]
            or self.anchor_weights_.shape != (self.points_.shape[1] - K,)
        ):
            raise DataError("saved srpl-v2 model has arrays of the wrong shape")
