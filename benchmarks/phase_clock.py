"""Per-phase wall time of a training iteration, from hooks both implementations accept.

The boundaries come from public PyTorch hooks, so the same clock times our ``train_step`` and the
official loop without touching either:

    G forward   iteration start -> generator forward hook
    flow loss   -> first discriminator call (teacher SPyNet on clean frames; the L1 is later)
    D update    -> discriminator optimizer step, post hook (D on real and fake, backward, step)
    G backward  -> generator optimizer step, pre hook (D on the composite, losses, backward)
    G optimizer -> generator optimizer step, post hook
    other       -> iteration end (LR schedules, logging of the losses)

On CUDA every boundary synchronises first, so a phase owns the kernels it launched.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import psutil
import torch
from torch import nn

PHASES = ("g_forward", "flow_loss", "d_update", "g_backward", "g_optimizer", "other")


def synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


class PhaseClock:
    """Collects one dict of phase durations (seconds) per timed iteration."""

    def __init__(self, device: str) -> None:
        self.sync = synchronizer(device)
        self.marks: dict[str, float] = {}
        self.start = 0.0
        self.active = False

    def attach(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        gen_optimizer: torch.optim.Optimizer,
        dis_optimizer: torch.optim.Optimizer,
    ) -> None:
        generator.register_forward_hook(lambda *_: self._mark("g_forward"))
        discriminator.register_forward_pre_hook(lambda *_: self._mark("flow_loss"))
        dis_optimizer.register_step_post_hook(lambda *_: self._mark("d_update"))
        gen_optimizer.register_step_pre_hook(lambda *_: self._mark("g_backward"))
        gen_optimizer.register_step_post_hook(lambda *_: self._mark("g_optimizer"))

    def _mark(self, name: str) -> None:
        if self.active and name not in self.marks:  # the first time each iteration
            self.sync()
            self.marks[name] = time.perf_counter()

    def run(self, iteration: Callable[[], object]) -> dict[str, float]:
        """Run one iteration; its phase durations plus ``total``."""
        self.sync()
        self.marks, self.active = {}, True
        self.start = time.perf_counter()
        iteration()
        self._mark("other")
        self.active = False
        missing = [p for p in PHASES if p not in self.marks]
        if missing:
            raise RuntimeError(f"phase boundaries never reached: {missing}")
        out, last = {}, self.start
        for phase in PHASES:
            out[phase] = self.marks[phase] - last
            last = self.marks[phase]
        out["total"] = last - self.start
        return out


class MemoryProbe:
    """Peak memory above a baseline: CUDA allocator peak, or the process's peak RSS on CPU.

    On CPU the peak is ``ru_maxrss`` (the whole life of the process), so run the probe in a
    fresh process whose setup needs less memory than the measured work.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.baseline = 0

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = psutil.Process().memory_info().rss

    def peak_delta_mib(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return (peak - self.baseline) / 2**20
