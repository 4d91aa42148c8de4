"""Per-operator cost of one training step, counted once and independently of any device.

The real training step (``e2fgvi.train.profiling.make_training_step``: G forward, D update,
G update) runs under PyTorch's ``FakeTensorMode``: every operator runs on shapes only, no
arithmetic, in seconds. A dispatch mode records each operator's FLOPs (PyTorch's FLOP formulas,
plus the deformable convolution's from ``e2fgvi.measure.flops``; an elementwise operator counts
one FLOP per output element), the bytes it reads and writes (its tensor arguments and results),
the dtype its inputs ran in, and the live bytes of the step: the real tensors it touches
(parameters, buffers, the batch) plus every result still referenced, whose peak is the step's
memory. The host syncs answer as a healthy step would: the loss is finite, the fp16 loss scaler
found no inf (so the optimiser steps).
"""

from __future__ import annotations

import collections
import logging
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from e2fgvi.config import Params
from e2fgvi.measure.flops import custom_formulas
from e2fgvi.measure.record import FrozenModel
from e2fgvi.train.profiling import make_training_step

log = logging.getLogger(__name__)

# Operators that move no data: shape and alias bookkeeping.
_FREE = {"detach", "lift_fresh", "alias", "_unsafe_view", "device", "t", "lift_fresh_copy"}
_SCALAR = torch.ops.aten._local_scalar_dense.default


class OpCost(FrozenModel):
    """One operator (name, dtype, sizes) and how often it ran in the step."""

    name: str
    matmul: bool  # a matmul/convolution (tensor cores); else elementwise/reduction
    dtype: str
    flops: float
    bytes: float
    count: int


class StepCost(FrozenModel):
    """Every operator of one training step, its memory, and what was counted."""

    clips_per_device: int
    ops: list[OpCost]
    flops: float
    bytes: float
    op_count: int
    peak_live_bytes: float
    resident_bytes: float  # parameters, buffers and the batch (real tensors the step touched)
    grad_bytes: float  # trainable parameters, i.e. what DDP all-reduces each step

    def scaled(self, clips: int) -> StepCost:
        """The same step at ``clips`` clips: FLOPs, bytes and activations linear in clips."""
        ratio = clips / self.clips_per_device
        activations = self.peak_live_bytes - self.resident_bytes
        return self.model_copy(
            update={
                "clips_per_device": clips,
                "ops": [
                    o.model_copy(update={"flops": o.flops * ratio, "bytes": o.bytes * ratio})
                    for o in self.ops
                ],
                "flops": self.flops * ratio,
                "bytes": self.bytes * ratio,
                "peak_live_bytes": self.resident_bytes + activations * ratio,
            }
        )


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class _Counter(TorchDispatchMode):
    """Records operator costs and live bytes; sits above the fake mode."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = FlopCounterMode(
            display=False, custom_mapping=custom_formulas()
        ).flop_registry
        self.ops: collections.Counter[tuple] = collections.Counter()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = self.peak = self.resident = self.grads = 0
        self.real_seen: set[int] = set()

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            self.live -= self.sizes.pop(key)
            del self.refs[key]

    def _hold(self, t: torch.Tensor) -> None:
        key = t.untyped_storage()._cdata
        if key not in self.refs:
            self.sizes[key] = t.untyped_storage().nbytes()
            self.refs[key] = 0
            self.live += self.sizes[key]
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        weakref.finalize(t, self._release, key)

    def _resident(self, inputs: list[torch.Tensor]) -> None:
        for t in inputs:
            if isinstance(t, FakeTensor) or id(t) in self.real_seen:
                continue
            self.real_seen.add(id(t))
            self.resident += _nbytes(t)
            self.grads += _nbytes(t) if t.requires_grad else 0
            self.live += _nbytes(t)
            self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SCALAR:  # host syncs, answered as a healthy step's
            # The loss is finite (a bool), Adam's step count is 1 (a 0-d float), and the fp16
            # loss scaler's found_inf (shape (1,)) is 0, so the optimiser steps.
            return 0 if args[0].dim() == 1 else 1
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        self._resident(inputs)
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if func.is_view or name in _FREE:
            return out
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        for t in outputs:
            self._hold(t)
        self._record(func, args, kwargs, out, inputs, outputs)
        return out

    def _record(self, func, args, kwargs, out, inputs, outputs) -> None:
        formula = self.registry.get(func.overloadpacket)
        moved = sum(_nbytes(t) for t in inputs + outputs)
        if formula is not None:
            flops = float(formula(*args, **kwargs, out_val=out))
        else:
            flops = float(sum(t.numel() for t in outputs))
        dtype = str(inputs[0].dtype if inputs else outputs[0].dtype if outputs else "none")
        key = (func.overloadpacket.__name__, formula is not None, dtype.removeprefix("torch."))
        self.ops[(*key, flops, float(moved))] += 1


def count_step(
    params: Params, clips: int = 1, make_step: Callable[..., Any] = make_training_step
) -> StepCost:
    """Count one training step of ``params``' configuration at ``clips`` clips per device.

    The networks are built for real on the CPU (their weights are the step's resident bytes);
    the step itself runs on fake tensors. The step's precision is the plan's ``train.amp``
    (an fp16 step is counted as bf16, relabelled: the loss scaler's own work is not counted).
    """
    fp16 = params.train.amp == "fp16"
    if fp16:  # fp16 autocast needs CUDA here: count the bf16 step (same shapes and bytes)
        params = params.model_copy(
            update={"train": params.train.model_copy(update={"amp": "bf16"})}
        )
    step = make_step(params, torch.device("cpu"), clips)
    counter = _Counter()
    with FakeTensorMode(allow_non_fake_inputs=True), counter:
        step()
        del step
    ops = [
        OpCost(
            name=n,
            matmul=m,
            dtype="float16" if fp16 and d == "bfloat16" else d,
            flops=f,
            bytes=b,
            count=c,
        )
        for (n, m, d, f, b), c in sorted(counter.ops.items(), key=lambda kv: -kv[0][3] * kv[1])
    ]
    cost = StepCost(
        clips_per_device=clips,
        ops=ops,
        flops=sum(o.flops * o.count for o in ops),
        bytes=sum(o.bytes * o.count for o in ops),
        op_count=sum(o.count for o in ops),
        peak_live_bytes=float(counter.peak),
        resident_bytes=float(counter.resident),
        grad_bytes=float(counter.grads),
    )
    log.debug(
        "counted step: %d operators, %.3g FLOPs, %.3g bytes moved, peak live %.3g GB",
        cost.op_count,
        cost.flops,
        cost.bytes,
        cost.peak_live_bytes / 2**30,
    )
    return cost
