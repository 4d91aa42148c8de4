"""A plan: the full training configuration you will run, and the fleet it runs on.

A plan is a params file (``params.official.yaml`` by default). Its ``model``, ``train`` and
``loss`` sections say what one device computes per step (variant, frame size, local and
reference frames, clips per device, precision, speed switches); ``train`` also gives the fleet
(devices = ``nproc_per_node`` x ``nnodes``, global batch, iterations). ``e2fgvi profile``
measures steps of that configuration here. What ran is a ``StepShape`` too, and every way it
differs from the plan's is a ``Difference`` that says how the forecast bridged it.
"""

from __future__ import annotations

from pathlib import Path

from e2fgvi.config import Params, load_params
from e2fgvi.cost.forecast import Schedule
from e2fgvi.cost.mfu import precision_of
from e2fgvi.errors import UserError
from e2fgvi.measure.record import FrozenModel, Scalar


class StepShape(FrozenModel):
    """What one device computes in one training step: everything its time depends on."""

    variant: str
    width: int
    height: int
    local_frames: int
    ref_frames: int
    clips_per_device: int
    precision: str  # the matmul precision: fp32 | tf32 | bf16 | fp16
    discriminator: bool
    flow_loss: bool
    cudnn_benchmark: bool
    channels_last: bool
    compile: bool
    deterministic: bool


class Plan(FrozenModel):
    """A plan file's step and fleet (``schedule``), as forecast."""

    source: str
    step: StepShape
    schedule: Schedule


class Difference(FrozenModel):
    """One way the measured configuration differs from the plan's, and how it was handled."""

    field: str
    plan: Scalar
    measured: Scalar
    handling: str


def step_shape(params: Params, clips_per_device: int) -> StepShape:
    """The step a params file trains, at ``clips_per_device`` clips."""
    train = params.train
    return StepShape(
        variant=params.model.variant,
        width=train.width,
        height=train.height,
        local_frames=train.num_local_frames,
        ref_frames=train.num_ref_frames,
        clips_per_device=clips_per_device,
        precision=precision_of(train.amp, train.tf32),
        discriminator=train.use_discriminator,
        flow_loss=params.loss.flow_weight > 0,
        cudnn_benchmark=train.cudnn_benchmark,
        channels_last=train.channels_last,
        compile=train.compile,
        deterministic=train.deterministic,
    )


def load_plan(
    path: Path,
    devices: int | None = None,
    iterations: int | None = None,
    global_batch: int | None = None,
) -> tuple[Params, Plan]:
    """The plan file's params and its plan, the fleet optionally overridden."""
    given = {"devices": devices, "iterations": iterations, "global_batch": global_batch}
    overrides = {key: value for key, value in given.items() if value is not None}
    if any(v < 1 for v in overrides.values()):
        raise UserError("--devices, --iterations and --global-batch must be positive")
    params = load_params(path)
    train = params.train
    schedule = Schedule(
        iterations=train.iterations,
        devices=train.nproc_per_node * train.nnodes,
        global_batch=train.batch_size,
    ).model_copy(update=overrides)
    try:
        clips = schedule.clips_per_device
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return params, Plan(source=str(path), step=step_shape(params, clips), schedule=schedule)


def measured_params(plan_params: Params, amp: str) -> Params:
    """The plan's params as measured here: its ``amp`` replaced, SPyNet random (same cost)."""
    return plan_params.model_copy(
        update={
            "train": plan_params.train.model_copy(update={"amp": amp}),
            "model": plan_params.model.model_copy(update={"spynet_init": "random"}),
        }
    )


def _handling(field: str, plan: StepShape, measured: StepShape, device: str) -> str:
    if field == "clips_per_device":
        ratio = plan.clips_per_device / measured.clips_per_device
        return f"step time assumed linear in clips per device (x{ratio:.3g}; not measured)"
    if field == "precision":
        return (
            f"{plan.precision} cannot run on {device}: figures are {measured.precision} steps, "
            "not scaled; band widened"
        )
    return "not scaled; band widened"


def differences(plan: Plan, measured: StepShape, devices: int, device: str) -> list[Difference]:
    """Every field where the measured step or device count differs from the plan's."""
    found = [
        Difference(
            field=field,
            plan=value,
            measured=getattr(measured, field),
            handling=_handling(field, plan.step, measured, device),
        )
        for field, value in plan.step.model_dump().items()
        if getattr(measured, field) != value
    ]
    if plan.schedule.devices != devices:
        found.append(
            Difference(
                field="devices",
                plan=plan.schedule.devices,
                measured=devices,
                handling="DDP scaling not measured: assumed perfect (an assumption); band widened",
            )
        )
    return found
