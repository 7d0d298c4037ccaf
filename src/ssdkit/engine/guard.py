"""The non-finite guard: a step whose loss or gradients are not finite changes nothing, and is counted.

Everything is decided on the device, so a guarded step adds no host synchronisation:

* a non-finite loss turns every gradient to NaN (the backward pass runs on ``loss * factor``, with ``factor``
  1 or NaN), so under ``DistributedDataParallel`` the gradient all-reduce carries one rank's bad loss to all
  ranks, and all of them skip the same step;
* one fused kernel (``torch._amp_foreach_non_finite_check_and_unscale_``) sets a ``found_inf`` flag when any
  gradient is not finite; the fused SGD / AdamW step reads that flag on the device and leaves parameters,
  momentum and Adam's moments and step count unchanged;
* the counters (skipped steps, the current streak of bad steps, the step where the streak reached ``patience``)
  are device tensors, read by the trainer only at its log intervals;
* the forward pass of a skipped step has already moved the batch norms' running statistics (an inf pixel makes
  them inf, and every later evaluation with them): :meth:`save_batch_norms` copies them before the forward pass
  and :meth:`restore_batch_norms` puts the copies back, on the device, when the step was skipped or the statistics
  came out non-finite.

With float16 loss scaling (``GradScaler``) the scaler already skips steps with non-finite gradients; the guard
then counts the steps whose loss itself was not finite (an overflow of the scaled gradients is routine and is
not counted). The scaler lowers its scale on such a step too: it cannot tell the two apart.
An optimizer without a fused kernel falls back to reading the flag on the host (one synchronisation a step).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NonFiniteGuard"]


class NonFiniteGuard:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        patience: int = 10,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.optimizer = optimizer
        self.patience = int(patience)
        self.scaler = scaler
        self.fused = bool(optimizer.defaults.get("fused"))
        self.found_inf = torch.zeros((), device=device)  # this step: 1.0 when skipped
        self.bad_loss = torch.zeros((), device=device)  # this step: 1.0 when the loss was not finite
        self._one = torch.ones((), device=device)
        # skipped steps, current streak, step count, step where the streak reached patience (-1: never)
        self.counters = torch.tensor([0.0, 0.0, 0.0, -1.0], device=device, dtype=torch.float64)
        self._stats: list[torch.Tensor] = []  # the watched batch norms' running statistics and step counts
        self._saved: list[torch.Tensor] = []
        self._float_stats: list[torch.Tensor] = []
        self._stats_bad = torch.zeros((), device=device)

    def watch_batch_norms(self, net: nn.Module) -> None:
        """Guard the running statistics of every batch norm in ``net`` (call again after the buffers were
        replaced, e.g. by ``.to()``)."""
        self._stats = [
            buffer
            for module in net.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
            if buffer is not None
        ]
        self._saved = [buffer.clone() for buffer in self._stats]
        self._float_stats = [buffer for buffer in self._stats if buffer.is_floating_point()]

    def save_batch_norms(self) -> None:
        """Copy the watched statistics (before the forward pass)."""
        if self._stats:
            torch._foreach_copy_(self._saved, self._stats)

    def restore_batch_norms(self, bad: torch.Tensor) -> None:
        """Put the copies back where ``bad`` > 0 (the step was skipped) or a running statistic is not finite;
        decided on the device."""
        if not self._stats:
            return
        self._stats_bad.zero_()
        torch._amp_foreach_non_finite_check_and_unscale_(self._float_stats, self._stats_bad, self._one)
        revert = (bad > 0) | (self._stats_bad > 0)
        for stat, saved in zip(self._stats, self._saved):
            stat.copy_(torch.where(revert, saved, stat))

    def guard_loss(self, backprop: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """``backprop`` unchanged when ``loss`` is finite, else NaN (so every gradient becomes NaN)."""
        finite = torch.isfinite(loss.detach())
        self.bad_loss = (~finite).to(self.found_inf.dtype)
        return backprop * torch.where(finite, 1.0, float("nan")).to(backprop.dtype)

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]

    def step(self) -> None:
        """Run ``optimizer.step()`` unless a gradient is not finite (after backward, without a scaler)."""
        self.found_inf.zero_()
        grads = self._grads()
        if grads:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, self._one)
        if self.fused:
            self.optimizer.found_inf = self.found_inf
            self.optimizer.step()
        elif not bool(self.found_inf):  # no fused kernel: the flag has to be read here
            self.optimizer.step()
        self._count(self.found_inf)

    def scaled_step(self) -> None:
        """``scaler.step`` + ``scaler.update`` (float16 loss scaling): count the steps whose loss was not finite."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._count(self.bad_loss)

    def _count(self, bad: torch.Tensor) -> None:
        c = self.counters
        bad = bad.to(c.dtype)
        c[0] += bad
        c[1] = (c[1] + 1) * bad
        c[2] += 1
        c[3] = torch.where((c[1] >= self.patience) & (c[3] < 0), c[2], c[3])

    def read(self) -> dict[str, int]:
        """The counters on the host (a synchronisation: call at log intervals). ``stop_step`` is the 1-based
        step count at which ``patience`` bad steps in a row were reached, or -1."""
        skipped, streak, steps, stop_step = (int(v) for v in self.counters.tolist())
        return {"skipped": skipped, "streak": streak, "steps": steps, "stop_step": stop_step}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"counters": self.counters.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.counters.copy_(state["counters"])
