"""Does training learn? PSNR/SSIM of the sample profile against iterations and device-hours.

Trains the sample profile (params.yaml: E2FGVI-HQ at train.width x train.height on the embedded
sample) for ITERATIONS iterations, far longer than the pipeline's 40, with the real train code,
in segments of EVERY iterations (each segment resumes the previous one's checkpoint, which gives
the same losses as one uninterrupted run). After each segment the generator is scored under the
evaluation protocol (params' eval section, the sample's test split and fixed masks). Two
references are scored the same way: the untrained generator (iteration 0, the seeded
initialisation training starts from) and a trivial fill (each hole pixel copied from the nearest
frame where that pixel is visible, ``e2fgvi.eval.baseline``).

Everything goes into the training run's MLflow run (``convergence/psnr``, ``convergence/ssim``,
``convergence/device_hours`` at step = iteration, plus the references as params), and into
OUT/convergence.json, OUT/convergence.csv and OUT/convergence.png. Device-hours are the summed
training step times (evaluation excluded) times one device; on a CPU they are CPU device-hours.

    PYTHONPATH=src .venv/bin/python benchmarks/convergence.py \
        [--iterations 600] [--every 100] [--eval-videos N] [--work /tmp/e2fgvi-convergence] \
        [--out benchmarks/results/convergence] [--resume]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch
import yaml
from matplotlib.figure import Figure
from sample_data import prepared_sample

from e2fgvi import tracking
from e2fgvi.config import Params, parse_params
from e2fgvi.devices import pick_device
from e2fgvi.eval.baseline import score_nearest_fill
from e2fgvi.eval.evaluate import evaluate
from e2fgvi.eval.generator import as_window_model, load_window_model
from e2fgvi.logs import setup_logging
from e2fgvi.model.build import build_generator
from e2fgvi.train.loop import train
from e2fgvi.train.session import TrainPaths

log = logging.getLogger("convergence")

EXPERIMENT = "convergence"


def _params(source: Path, iterations: int, every: int, eval_videos: int | None) -> Params:
    """The sample profile, with the length, checkpoint cadence and tracking of this benchmark."""
    raw = yaml.safe_load(source.read_text())
    raw["train"].update(
        iterations=iterations, checkpoint_every=every, image_every=every, log_every=1
    )
    raw["eval"]["vfid"] = False  # no I3D weights offline; VFID is not the question here
    if eval_videos is not None:
        raw["eval"]["max_videos"] = eval_videos
    raw["tracking"].update(experiment=EXPERIMENT, log_checkpoints=False)
    return parse_params(raw, str(source))


def _paths(work: Path, data: Path) -> TrainPaths:
    return TrainPaths.under(data, work / "run", work / "mlruns")


def _with_iterations(params: Params, iterations: int) -> Params:
    return params.model_copy(
        update={"train": params.train.model_copy(update={"iterations": iterations})}
    )


def _train_seconds(history: Path, upto: int) -> float:
    """Summed step times of iterations 1..upto from the run's loss history."""
    with history.open(newline="") as handle:
        return sum(
            float(r["cost/step_s"]) for r in csv.DictReader(handle) if int(r["step"]) <= upto
        )


def _score(data: Path, model, params: Params, device: torch.device) -> tuple[float, float]:
    report = evaluate(data, model, params.eval, device=device)
    summary = report.summary()
    return float(summary["psnr"]), float(summary["ssim"])


def _untrained(params: Params, device: torch.device):
    """The generator exactly as ``build_nets`` initialises it before iteration 1."""
    torch.manual_seed(params.seed)
    generator = build_generator(params.model, None).to(device).eval()
    return as_window_model(generator, params.model.variant)


def run_benchmark(args: argparse.Namespace) -> dict:
    params = _params(args.params, args.iterations, args.every, args.eval_videos)
    if params.model.spynet_init != "random":
        raise SystemExit(
            "convergence.py trains with model.spynet_init: random (no weights offline)"
        )
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = prepared_sample(work, params)
    paths = _paths(work, data)
    device = pick_device(params.train.device)
    fill = score_nearest_fill(data, params.eval)
    log.info("nearest-frame fill: PSNR %.3f, SSIM %.4f", fill.psnr, fill.ssim)
    rows = _earlier_rows(args) if args.resume else []
    if not rows:
        psnr, ssim = _score(data, _untrained(params, device), params, device)
        rows = [{"iteration": 0, "device_hours": 0.0, "wall_s": 0.0, "psnr": psnr, "ssim": ssim,
                 "load_1min": os.getloadavg()[0]}]  # fmt: skip
        log.info("iteration 0 (untrained): PSNR %.3f, SSIM %.4f", psnr, ssim)
    # wall_s goes on from the earlier invocation's last point (the time between them excluded)
    start = time.perf_counter() - rows[-1]["wall_s"]
    for upto in range(rows[-1]["iteration"] + args.every, args.iterations + 1, args.every):
        train(_with_iterations(params, upto), paths)
        seconds = _train_seconds(paths.folder(params) / "history.csv", upto)
        model, _ = load_window_model(paths.generator, params.model.variant, device)
        psnr, ssim = _score(data, model, params, device)
        wall = time.perf_counter() - start
        rows.append({"iteration": upto, "device_hours": seconds / 3600.0, "wall_s": wall,
                     "psnr": psnr, "ssim": ssim, "load_1min": os.getloadavg()[0]})  # fmt: skip
        log.info("iteration %d: PSNR %.3f, SSIM %.4f (%.0f s of steps)", upto, psnr, ssim, seconds)
        # a cut-short run still leaves the curve so far (marked partial) under --out
        write_files(_result(args, params, device, fill, rows, paths, complete=False), args.out)
    return _result(args, params, device, fill, rows, paths, complete=True)


def _earlier_rows(args: argparse.Namespace) -> list[dict]:
    """The curve of an earlier, cut-short invocation with the same settings (``--resume``).

    Its training went on in --work past its last scored point (checkpoints); the segments not
    yet scored are trained (resuming from the newest checkpoint) and scored now.
    """
    path = args.out / "convergence.json"
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    conditions = earlier["conditions"]
    same = (conditions["iterations"], conditions["eval_every"]) == (args.iterations, args.every)
    if not same:
        raise SystemExit(f"{path}: made with other --iterations/--every; drop --resume")
    log.info("resuming the curve of %s after iteration %d", path, earlier["curve"][-1]["iteration"])
    return earlier["curve"]


def _result(args, params: Params, device, fill, rows: list, paths: TrainPaths, complete: bool):
    """The benchmark's record: its conditions, the references and the curve so far."""
    return {
        "conditions": {
            "profile": str(args.params),
            "variant": params.model.variant,
            "train_size": f"{params.train.width}x{params.train.height}",
            "eval_size": f"{params.eval.width}x{params.eval.height}",
            "device": device.type,
            "torch_threads": torch.get_num_threads(),
            "host": platform.node(),
            "load_average_at_end": os.getloadavg(),
            "device_hours": "summed training step times x 1 device (evaluation excluded)",
            "test_videos": fill.videos,
            "test_frames": fill.frames,
            "iterations": args.iterations,
            "iterations_done": rows[-1]["iteration"],
            "complete": complete,
            "eval_every": args.every,
        },
        "nearest_fill": {"psnr": fill.psnr, "ssim": fill.ssim},
        "curve": rows,
        "run_record": json.loads(paths.run_record.read_text()),
    }


def plot(result: dict, path: Path) -> None:
    """PSNR and SSIM against iterations (top) and device-hours (bottom), with the trivial fill."""
    rows, fill = result["curve"], result["nearest_fill"]
    unit = "CPU" if result["conditions"]["device"] == "cpu" else "GPU"
    variant = f"{result['conditions']['variant']} (iteration 0: untrained)"
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for col, metric in enumerate(("psnr", "ssim")):
        for row, (x_key, x_label) in enumerate(
            (("iteration", "iteration"), ("device_hours", f"{unit} device-hours"))
        ):
            ax = axes[row][col]
            ax.plot([r[x_key] for r in rows], [r[metric] for r in rows], "o-", label=variant)
            ax.axhline(fill[metric], color="tab:red", ls="--", label="nearest-frame fill")
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
    fig.suptitle(f"Sample profile ({result['conditions']['train_size']}), evaluation protocol")
    fig.savefig(path, dpi=110)


def write_files(result: dict, out: Path) -> None:
    """JSON, CSV and PNG under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "convergence.json").write_text(json.dumps(result, indent=1) + "\n")
    with (out / "convergence.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result["curve"][0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(result["curve"])
    plot(result, out / "convergence.png")


def write_and_log(result: dict, out: Path) -> None:
    """JSON, CSV and PNG under ``out``, and the curve into the training run's MLflow run."""
    write_files(result, out)
    reference = result["run_record"]
    logger = tracking.attach(reference["uri"], reference["run_id"])
    for row in result["curve"]:
        values = {f"convergence/{k}": row[k] for k in ("psnr", "ssim", "device_hours")}
        logger.log_metrics(values, step=row["iteration"])
    fill = result["nearest_fill"]
    logger.log_params({"convergence.nearest_fill_psnr": fill["psnr"],
                       "convergence.nearest_fill_ssim": fill["ssim"]})  # fmt: skip
    for name in ("convergence.json", "convergence.csv", "convergence.png"):
        logger.log_artifact(out / name, "convergence")
    if not logger.close():
        log.warning("MLflow did not take every record (see the messages above)")


def table(result: dict) -> str:
    fill = result["nearest_fill"]
    lines = [f"{'iteration':>9}  {'device-h':>9}  {'PSNR':>7}  {'SSIM':>6}"]
    for r in result["curve"]:
        lines.append(
            f"{r['iteration']:>9}  {r['device_hours']:>9.4f}  {r['psnr']:>7.3f}  {r['ssim']:>6.4f}"
        )
    lines.append(f"{'fill':>9}  {'-':>9}  {fill['psnr']:>7.3f}  {fill['ssim']:>6.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2fgvi-convergence"))
    parser.add_argument(
        "--eval-videos", type=int, help="score only the first N test videos (eval.max_videos)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/convergence"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from OUT/convergence.json's last point (same --work, --iterations, --every)",
    )
    args = parser.parse_args()
    setup_logging()
    result = run_benchmark(args)
    write_and_log(result, args.out)
    print(table(result))


if __name__ == "__main__":
    main()
