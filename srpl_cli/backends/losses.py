"""Reciprocal-points losses as ``nn.Module`` objects (pytorch-ood keeps objectives apart from estimators).

Faithful to the SpeakerRPL authors' code (``loss/SRPL.py`` and ``loss/Dist.py`` in
zhiyongchenGREAT/speaker-reciprocal-points-learning, built on ARPL's ``loss/ARPLoss.py`` in iCGY96/ARPL):

- ``logits = -(f @ P.T)`` with reciprocal points ``P`` (K, d); the open-set score is the max logit.
- ``loss = CE(logits, y) + w * margin(R, d_y) + CE(-(f @ Q.T), y) + w * MSE(f, P_y) / 2`` where the
  second point set ``Q`` is the authors' ``Dist2``, ``w`` is ``weight_pl`` and ``margin(R, d) =
  mean_i max(0, d_i - R + 1)`` (``nn.MarginRankingLoss(margin=1)`` with target 1) for a learnable radius R.
  In the authors' SRPL code ``d_i = f_i . P_{y_i}`` (a dot product); ARPL (and the issue text) use
  ``mean_j (f_ij - P_{y_i j})^2``. ``radius_metric`` picks one; the default is the released code's ``"dot"``.
- SRPL+ with unknown samples: ``beta * exp(mean_i sum_k p_ik log p_ik)``, i.e. ``beta * exp(-mean entropy)``.
  The authors' ``fake_loss`` takes ``p = softmax`` of ``Dist(x, P)`` with its default metric, the squared
  L2 distance divided by d (ARPL's convention), not of the ``-(f @ P.T)`` logits. ``entropy_metric``
  picks one; the default is the released code's ``"l2"``.

``LogitNormAnchorLoss`` is SpeakerRPL v2's objective (:mod:`srpl_cli.backends.srpl_v2`): LogitNorm
cross-entropy over the K speakers' reciprocal-point logits plus M extra "unknown" anchor logits.

torch is imported inside :func:`build_losses` so importing this module stays cheap.
"""

from __future__ import annotations

import functools
from typing import Any

RADIUS_METRICS = ("dot", "l2")
ENTROPY_METRICS = ("l2", "logits")


@functools.cache
def build_losses() -> dict[str, Any]:
    """Define the loss classes (torch is imported lazily) and return them by name."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def dist_l2(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """ARPL's ``Dist(metric='l2')``: squared distance divided by the feature dimension."""
        f2 = (x * x).sum(1, keepdim=True)
        c2 = (centers * centers).sum(1, keepdim=True).T
        return (f2 - 2 * x @ centers.T + c2) / float(x.shape[1])

    class SRPLLoss(nn.Module):
        """The SRPL objective: holds P (``points``), Q (``q_points``) and the radius R as parameters."""

        def __init__(
            self,
            n_classes: int,
            feat_dim: int,
            weight_pl: float = 5.0,
            radius_metric: str = "dot",
            entropy_metric: str = "l2",
            temp: float = 1.0,
            generator: torch.Generator | None = None,
        ) -> None:
            super().__init__()
            if radius_metric not in RADIUS_METRICS:
                raise ValueError(f"radius_metric must be one of {RADIUS_METRICS}, got {radius_metric!r}")
            if entropy_metric not in ENTROPY_METRICS:
                raise ValueError(f"entropy_metric must be one of {ENTROPY_METRICS}, got {entropy_metric!r}")
            self.weight_pl = float(weight_pl)
            self.radius_metric = radius_metric
            self.entropy_metric = entropy_metric
            self.temp = float(temp)
            # Dist(init='random'): 0.1 * randn, as in ARPL / SRPL
            self.points = nn.Parameter(0.1 * torch.randn(n_classes, feat_dim, generator=generator))
            self.q_points = nn.Parameter(0.1 * torch.randn(n_classes, feat_dim, generator=generator))
            self.radius = nn.Parameter(torch.zeros(1))

        def logits(self, f: torch.Tensor) -> torch.Tensor:
            return -(f @ self.points.T)

        def forward(self, f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            loss = F.cross_entropy(self.logits(f) / self.temp, labels)
            p_y = self.points[labels]
            if self.radius_metric == "dot":
                d = (f * p_y).sum(1)
            else:
                d = (f - p_y).pow(2).mean(1)
            loss_r = F.relu(d - self.radius + 1.0).mean()  # MarginRankingLoss(R, d, 1), margin 1
            loss2 = F.cross_entropy(-(f @ self.q_points.T) / self.temp, labels)
            loss_r2 = F.mse_loss(f, p_y) / 2
            return loss + self.weight_pl * loss_r + loss2 + self.weight_pl * loss_r2

        def unknown_loss(self, f_unknown: torch.Tensor) -> torch.Tensor:
            """``exp(mean sum p log p)``: small when unknowns look equally like every known speaker."""
            z = dist_l2(f_unknown, self.points) if self.entropy_metric == "l2" else self.logits(f_unknown)
            logp = F.log_softmax(z, dim=1)
            return (logp.exp() * logp).sum(1).mean().exp()

    class LogitNormAnchorLoss(nn.Module):
        """LogitNorm cross-entropy (Wei et al., ICML 2022) over K speaker + M unknown-anchor logits.

        ``logits`` (..., n, K + M): the first ``n_classes`` columns are the enrolled speakers, the rest
        the anchors of the unknown space. Each logit vector is divided by ``temperature`` times its own
        norm, so the loss cannot be lowered by inflating every logit (which is what makes plain
        cross-entropy over-confident far from the training data). A known sample (label k >= 0) is
        pulled to its speaker against every other speaker *and* every anchor; an unknown sample (label
        -1) to the anchor group as a whole (``-log sum_m p_anchor_m``), so it may settle on whichever
        anchor is nearest. Leading dimensions (an ensemble of models trained together) are averaged.
        """

        def __init__(self, n_classes: int, temperature: float = 0.1, unknown_weight: float = 1.0) -> None:
            super().__init__()
            self.n_classes = int(n_classes)
            self.temperature = float(temperature)
            self.unknown_weight = float(unknown_weight)

        def normalised(self, logits: torch.Tensor) -> torch.Tensor:
            norm = logits.norm(dim=-1, keepdim=True).clamp_min(1e-7)
            return logits / (norm * self.temperature)

        def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            logp = F.log_softmax(self.normalised(logits), dim=-1)
            known = labels >= 0
            loss = logits.new_zeros(())
            if known.any():
                idx = labels[known].view(*([1] * (logp.dim() - 2)), -1, 1)
                picked = logp[..., known, :].gather(-1, idx.expand(*logp.shape[:-2], -1, 1))
                loss = loss - picked.mean()
            if (~known).any() and logp.shape[-1] > self.n_classes:
                to_anchor = torch.logsumexp(logp[..., ~known, self.n_classes :], dim=-1)
                loss = loss - self.unknown_weight * to_anchor.mean()
            return loss

    return {"SRPLLoss": SRPLLoss, "dist_l2": dist_l2, "LogitNormAnchorLoss": LogitNormAnchorLoss}
