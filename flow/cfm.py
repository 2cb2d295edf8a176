"""Conditional flow matching: the OT-CFM loss, classifier-free guidance and the ODE solver.

The maths only; the network that estimates the vector field lives in
:mod:`flow.backbone` and is passed in as a callable::

    estimator(x_t, t, drop) -> v        # x_t (B, C, T), t (B,), drop (B,) bool -> v (B, C, T)

``drop[b]`` asks for the unconditional field (all conditions dropped), which is
what classifier-free guidance extrapolates away from.

Paths (Lipman et al. 2023, OT-CFM with sigma_min): noise ``x0`` at ``t = 0``,
data ``x1`` at ``t = 1``::

    x_t = (1 - (1 - sigma_min) t) x0 + t x1,    u_t = x1 - (1 - sigma_min) x0

Inference integrates ``dx/dt = v`` from 0 to 1 on a time grid warped by a
schedule: ``linear``, ``cosine`` (``1 - cos(pi t / 2)``, small steps near the
noise end, as CosyVoice) or ``sway`` (F5-TTS, ``t + s (cos(pi t / 2) - 1 + t)``
with ``s = -1`` by default, which is the cosine grid again; ``s > -1`` moves it toward linear). Solvers: ``euler`` (one call per step) or
``midpoint`` (two). Guidance: ``v = (1 + w) v_cond - w v_uncond``; ``w = 0``
skips the unconditional call, so it *is* the conditional path.

Prior start (``prior_start = s > 0``; DiffSinger's shallow diffusion, here on
the OT path): with a mel prior ``mu`` (the flow's token encoder), integration
starts at ``t = s`` from ``x_s = (1 - (1 - sigma_min) s) x0 + s mu``, the point the
path would pass if the data were ``mu``; the solver's steps then cover
``[s, 1]`` only. The field refines a smooth, intelligible prior instead of
building everything from noise, which pays while the field is undertrained.

Training where inference goes (``train_start = s > 0``): training times are drawn
in ``[s, 1]`` only, the part of the path a solver started at ``prior_start >= s``
visits, so the small field spends none of its capacity on ``t < s`` (DiffSinger
trains its shallow diffusion on its first ``k`` steps alone). Such a field refuses
an earlier start.

Noise scale (``noise_scale = tau``, Matcha-TTS's "temperature"): the starting noise is
``tau * x0``. Below 1 the samples sit nearer the field's mean path: fewer artefacts,
less variety.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Estimator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("euler", "midpoint")
SCHEDULES = ("linear", "cosine", "sway")


@dataclass
class CFMConfig:
    sigma_min: float = 1e-4
    cfg_dropout: float = 0.2  # training: probability that all conditions of a sample are dropped
    steps: int = 10  # inference defaults, overridable per call
    solver: str = "euler"
    schedule: str = "cosine"
    sway: float = -1.0  # sway coefficient s (F5-TTS uses -1)
    guidance: float = 0.7  # classifier-free guidance scale w
    prior_start: float = 0.0  # inference: start time s on the path through the prior mu (0 = from noise)
    noise_scale: float = 1.0  # inference: the starting noise's standard deviation (Matcha-TTS's temperature)
    train_start: float = 0.0  # training: times drawn in [train_start, 1] (inference may not start earlier)

    def validate(self) -> None:
        check_solver_options(self.steps, self.solver, self.schedule, self.prior_start, self.noise_scale)
        if not 0.0 <= self.train_start < 1.0:
            raise ValueError(f"train_start must be in [0, 1), got {self.train_start!r}")
        self.check_start(self.prior_start)
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")

    def check_start(self, start: float) -> None:
        """Refuse an inference start the field was not trained for (see the module's docstring)."""
        if start < self.train_start:
            raise ValueError(f"prior_start {start} is below train_start {self.train_start}: "
                             f"the field never saw t < {self.train_start}")


def check_solver_options(steps: int, solver: str, schedule: str, start: float = 0.0, noise_scale: float = 1.0) -> None:
    if not 0.0 <= start < 1.0:
        raise ValueError(f"prior_start must be in [0, 1), got {start!r}")
    if not 0.0 < noise_scale <= 2.0:
        raise ValueError(f"noise_scale must be in (0, 2], got {noise_scale!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: use one of {SOLVERS}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: use one of {SCHEDULES}")


def time_grid(steps: int, schedule: str = "cosine", sway: float = -1.0, start: float = 0.0) -> torch.Tensor:
    """(steps + 1,) increasing times from exactly ``start`` (default 0) to exactly 1."""
    check_solver_options(steps, "euler", schedule, start)
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if schedule == "cosine":
        t = 1.0 - torch.cos(t * math.pi / 2)
    elif schedule == "sway":
        t = t + sway * (torch.cos(t * math.pi / 2) - 1.0 + t)
    t[0], t[-1] = 0.0, 1.0
    return (start + (1.0 - start) * t).float()


def prior_point(noise: torch.Tensor, mu: torch.Tensor | None, start: float, sigma_min: float) -> torch.Tensor:
    """Where integration starts: ``noise`` at t = 0, or the path's point at t = ``start`` through ``mu``."""
    if not start:
        return noise
    if mu is None:
        raise ValueError("prior_start > 0 needs a mel prior (a flow model with encoder_layers > 0)")
    return (1.0 - (1.0 - sigma_min) * start) * noise + start * mu.to(noise.dtype)


def cfm_loss(estimator: Estimator, x1: torch.Tensor, loss_mask: torch.Tensor,
             cfg: CFMConfig, generator: torch.Generator | None = None, estimate: bool = False):
    """OT-CFM regression loss: mean squared velocity error over ``loss_mask`` frames.

    x1: (B, C, T) normalised target mel; loss_mask: (B, T) bool, the frames to learn
    (the target region: neither prompt nor padding). Conditions are dropped for a
    random ``cfg.cfg_dropout`` share of the batch. Times lie in ``[cfg.train_start, 1]``.

    ``estimate=True`` returns ``(loss, x1_hat, t, drop)``: the one-step estimate of the clean
    mel ``x_t + (1 - t) v`` ((B, C, T); x1 + sigma_min x0 when v is exact), the (B,) times and
    the (B,) bool rows whose conditions were dropped (:mod:`flow.phonetic` reads it).
    """
    b, s = x1.shape[0], cfg.train_start
    t = s + (1 - s) * torch.rand(b, device=x1.device, generator=generator)
    x0 = torch.randn(x1.shape, device=x1.device, generator=generator, dtype=x1.dtype)
    tt = t.view(b, 1, 1)
    x_t = (1 - (1 - cfg.sigma_min) * tt) * x0 + tt * x1
    u = x1 - (1 - cfg.sigma_min) * x0
    drop = torch.rand(b, device=x1.device, generator=generator) < cfg.cfg_dropout
    v = estimator(x_t, t, drop)
    loss = masked_mse(v, u, loss_mask)
    return (loss, x_t + (1 - tt) * v, t, drop) if estimate else loss


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (B, C, T) tensors over the frames where ``mask`` (B, T) is True, in fp32."""
    m = mask.unsqueeze(1).float()
    return (((pred.float() - target.float()) ** 2) * m).sum() / (m.sum() * pred.shape[1]).clamp(min=1.0)


def guided(estimator: Estimator, guidance: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x, t) -> the guided field; conditional and unconditional share one batched call."""
    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tb = t.expand(b)
        if guidance == 0.0:
            return estimator(x, tb, torch.zeros(b, dtype=torch.bool, device=x.device))
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x.device)
        v = estimator(torch.cat([x, x]), torch.cat([tb, tb]), drop)
        v_cond, v_uncond = v[:b], v[b:]
        return (1.0 + guidance) * v_cond - guidance * v_uncond
    return field


@torch.no_grad()
def solve(estimator: Estimator, noise: torch.Tensor, steps: int = 10, solver: str = "euler",
          schedule: str = "cosine", guidance: float = 0.0, sway: float = -1.0, start: float = 0.0) -> torch.Tensor:
    """Integrate from ``noise`` (B, C, T) at t = ``start`` (see :func:`prior_point`) to a sample at t = 1."""
    check_solver_options(steps, solver, schedule, start)
    field = guided(estimator, guidance)
    ts = time_grid(steps, schedule, sway, start).to(noise.device)
    x = noise
    for i in range(steps):
        t0, t1 = ts[i], ts[i + 1]
        dt = t1 - t0
        if solver == "euler":
            x = x + dt * field(x, t0.view(1))
        else:  # midpoint
            x_mid = x + 0.5 * dt * field(x, t0.view(1))
            x = x + dt * field(x_mid, (t0 + 0.5 * dt).view(1))
    return x
