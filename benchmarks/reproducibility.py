"""What changes the numbers? The train stage under CPU-numerics variants, compared step by step.

Runs the real train stage command (as dvc.yaml runs it) on the embedded sample with the sample
profile, once per variant: the same settings twice, one torch thread instead of the default, a
lower CPU instruction set (ATen's ``ATEN_CPU_CAPABILITY``, and with oneDNN and MKL capped too),
oneDNN (mkldnn) off, ``train.deterministic: true``, and DataLoader workers. Every logged loss and
gradient norm of every step is compared with the first variant's: the table says whether the
run is bit-identical, and if not, the first step and key that differ, the relative size of that
first difference, and the largest relative difference at the last step. With ``--eval`` the
evaluate stage also scores the first variant's generator under the environment variants, and
with ``--committed`` the reference is compared with the committed ``reports/train_loss.csv``
(meaningful only with 40 iterations of the unchanged sample profile). With ``--kernels`` the single
CPU kernels training runs (conv2d/conv3d forward and weight gradient, matmul, a long sum, softmax,
layer norm, GELU, bilinear upsampling, grid_sample, deform_conv2d, an Adam step) are first run on
fixed inputs in each environment variant and compared bitwise (``--variants ''`` for only that).

    PYTHONPATH=src .venv/bin/python benchmarks/reproducibility.py \
        [--iterations 4] [--variants default,again,threads-1] [--kernels] [--eval] \
        [--eval-variants default,again] [--eval-videos 1] [--committed] \
        [--work /tmp/e2fgvi-reproducibility] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Run a stage module (or this script) after switching oneDNN off (no env variable does that).
_LAUNCH = (
    "import runpy, sys, torch; torch.backends.mkldnn.enabled = {mkldnn}; "
    "sys.argv = sys.argv[1:]; "
    "runpy.{runner}(sys.argv[0], run_name='__main__'{alter})"
)
_AVX2_EVERYWHERE = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    train: dict[str, object] = field(default_factory=dict)  # params.yaml train overrides
    mkldnn: bool = True
    what: str = ""


VARIANTS = (
    Variant("default", what="params.yaml, default threads and CPU capability"),
    Variant("again", what="the same settings, a second time"),
    Variant("threads-1", env={"OMP_NUM_THREADS": "1"}, what="one intra-op thread"),
    Variant("aten-avx2", env={"ATEN_CPU_CAPABILITY": "avx2"}, what="ATen kernels at AVX2"),
    Variant("avx2-all", env=_AVX2_EVERYWHERE, what="ATen, oneDNN and MKL capped at AVX2"),
    Variant("onednn-avx2", env={"ONEDNN_MAX_CPU_ISA": "AVX2"}, what="oneDNN kernels at AVX2"),
    Variant("mkl-avx2", env={"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, what="MKL kernels at AVX2"),
    Variant("aten-default", env={"ATEN_CPU_CAPABILITY": "default"}, what="ATen without SIMD"),
    Variant("mkldnn-off", mkldnn=False, what="torch.backends.mkldnn.enabled = False"),
    Variant("deterministic", train={"deterministic": True}, what="train.deterministic: true"),
    Variant("workers-2", train={"num_workers": 2}, what="train.num_workers: 2"),
)
TRAIN_VARIANTS = ("default", "again", "threads-1", "aten-avx2", "avx2-all", "aten-default",
                  "mkldnn-off", "deterministic", "workers-2")  # fmt: skip
EVAL_VARIANTS = ("default", "again", "threads-1", "aten-avx2", "avx2-all", "mkldnn-off")
_COMPARED = ("loss/", "grad_norm/")  # the numerics columns of the loss history


def _params(folder: Path, iterations: int, train: dict[str, object], eval_videos: int) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(
        iterations=iterations, checkpoint_every=iterations, image_every=10**6, **train
    )
    raw["eval"].update(vfid=False, max_videos=eval_videos)
    raw["tracking"].update(experiment="reproducibility", log_checkpoints=False, retry_interval_s=0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _run(module: str, args: list[str], folder: Path, variant: Variant) -> None:
    """``python -m module args`` (or ``python module args`` for a .py path) in the variant."""
    runner, alter = (
        ("run_path", "") if module.endswith(".py") else ("run_module", ", alter_sys=True")
    )
    launch = _LAUNCH.format(mkldnn=variant.mkldnn, runner=runner, alter=alter)
    command = [sys.executable, "-c", launch, module, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **variant.env}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{variant.name}: {module} failed:\n{done.stderr[-3000:]}")


def train_variant(
    work: Path, data: Path, variant: Variant, iterations: int, eval_videos: int = 0
) -> list[dict]:
    folder = work / variant.name
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    _params(folder, iterations, variant.train, eval_videos)
    _run("e2fgvi.stages.train", ["--data", str(data), "--spynet", "spynet.pth",
         "--checkpoints", "run/checkpoints", "--generator", "run/generator.pth",
         "--cost-record", "run/cost_raw.json", "--run-record", "run/mlflow_run.json",
         "--params-used", "run/params_used.json", "--mlruns", "mlruns",
         "--metrics", "train.json", "--plots", "train_loss.csv"], folder, variant)  # fmt: skip
    return read_history(folder / "train_loss.csv")


def eval_variant(work: Path, data: Path, reference: Path, variant: Variant) -> dict:
    """Score ``reference``'s generator (a trained variant's folder) in this variant's env."""
    out = work / "eval" / variant.name
    _run("e2fgvi.stages.evaluate", ["--data", str(data),
         "--checkpoint", str(reference / "run" / "generator.pth"),
         "--pretrained", "none.pt", "--run", str(reference / "run" / "mlflow_run.json"),
         "--mlruns", str(reference / "mlruns"), "--out", str(out)], reference, variant)  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def read_history(path: Path) -> list[dict[str, float]]:
    """The numerics columns of a loss history CSV, one dict per logged step."""
    with path.open(newline="") as handle:
        return [
            {k: float(v) for k, v in row.items() if k == "step" or k.startswith(_COMPARED)}
            for row in csv.DictReader(handle)
        ]


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def compare(reference: list[dict], rows: list[dict]) -> dict[str, object]:
    """Where ``rows`` first differs from ``reference`` and how far apart the last steps are.

    Returns ``identical`` (every compared value of the ``steps`` common steps bitwise equal),
    ``first_step``/``first_key``/
    ``first_rel`` (the first differing value, steps in order, keys sorted), ``last_max_rel``
    (largest relative difference over the loss keys at the last common step) and
    ``last_generator`` (loss/generator of ``rows`` at that step).
    """
    by_step = {int(r["step"]): r for r in rows}
    common = [r for r in reference if int(r["step"]) in by_step]
    keys = sorted(k for k in reference[0] if k != "step") if reference else []
    result: dict[str, object] = {"identical": True, "steps": len(common), "first_step": None,
                                 "first_key": None, "first_rel": None}  # fmt: skip
    for ref in common:
        other = by_step[int(ref["step"])]
        diffs = [k for k in keys if k not in other or not _same(ref[k], other[k])]
        if diffs:
            key = diffs[0]
            result.update(identical=False, first_step=int(ref["step"]), first_key=key,
                          first_rel=_rel(ref[key], other.get(key, math.nan)))  # fmt: skip
            break
    if common:
        last_ref, last = common[-1], by_step[int(common[-1]["step"])]
        losses = [k for k in keys if k.startswith("loss/") and k in last]
        result["last_max_rel"] = max((_rel(last_ref[k], last[k]) for k in losses), default=0.0)
        result["last_generator"] = last.get("loss/generator")
    return result


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def probe_kernels(out: Path) -> None:
    """Outputs of the CPU kernels E2FGVI training runs, on fixed inputs, saved to ``out`` (.npz).

    Runs inside each variant's process (``--probe``); the parent compares the files.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.ops import deform_conv2d

    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    got: dict[str, torch.Tensor] = {}
    x, w = r(2, 64, 60, 108).requires_grad_(), (r(64, 64, 3, 3) * 0.05).requires_grad_()
    y = F.conv2d(x, w, padding=1)
    y.square().sum().backward()
    got |= {"conv2d forward": y, "conv2d weight grad": w.grad}
    got["conv3d forward"] = F.conv3d(r(1, 32, 5, 30, 54), r(64, 32, 3, 5, 5) * 0.05,
                                     padding=(1, 2, 2), stride=(1, 2, 2))  # fmt: skip
    got["matmul 512"] = r(512, 512) @ r(512, 512)
    v = r(4_000_000)
    got |= {"sum 4M": v.sum(), "softmax": F.softmax(r(64, 1024), -1)}
    got |= {"layer_norm": F.layer_norm(r(64, 1024), (1024,)), "gelu": F.gelu(r(1_000_000))}
    got["bilinear x2"] = F.interpolate(r(1, 16, 60, 108), scale_factor=2, mode="bilinear")
    grid = torch.rand(1, 60, 108, 2, generator=g) * 2 - 1
    got["grid_sample"] = F.grid_sample(r(1, 16, 60, 108), grid, align_corners=True)
    xi, wd = r(1, 32, 30, 54).requires_grad_(), (r(32, 8, 3, 3) * 0.05).requires_grad_()
    mask = torch.rand(1, 36, 30, 54, generator=g)
    yd = deform_conv2d(xi, r(1, 72, 30, 54), wd, padding=1, mask=mask)
    yd.square().sum().backward()
    got |= {"deform_conv2d forward": yd, "deform_conv2d weight grad": wd.grad}
    p = torch.nn.Parameter(r(1_000_000))
    adam = torch.optim.Adam([p], lr=1e-4, betas=(0.0, 0.99))
    for _ in range(2):
        p.grad = r(1_000_000)
        adam.step()
    got["adam step"] = p
    np.savez(out, **{k: t.detach().numpy() for k, t in got.items()})


def kernel_table(work: Path, variants: list[Variant]) -> str:
    """Each kernel's output in each variant against the first: = (bitwise) or max|diff|/max|x|."""
    outs = {}
    for variant in variants:
        folder = work / "kernels"
        folder.mkdir(parents=True, exist_ok=True)
        _run(__file__, ["--probe", str(folder / f"{variant.name}.npz")], folder, variant)
        outs[variant.name] = np.load(folder / f"{variant.name}.npz")
    base = outs[variants[0].name]
    names = [v.name for v in variants[1:]]
    title = f"kernels: each output against '{variants[0].name}' (= bitwise, else max|diff|/max|x|)"
    lines = [title, f"{'kernel':<26}" + "".join(f"{n:>13}" for n in names)]
    for key in base.files:
        cells = []
        for name in names:
            a, b = base[key].astype(np.float64), outs[name][key].astype(np.float64)
            same = np.array_equal(base[key], outs[name][key])
            cells.append("=" if same else f"{np.abs(a - b).max() / np.abs(a).max():.1e}")
        lines.append(f"{key:<26}" + "".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def train_table(results: dict[str, dict], reference: str) -> str:
    head = ("variant", "steps", "identical", "1st step", "1st key", "1st rel", "last rel",
            "last loss/gen", "s")  # fmt: skip
    lines = [
        f"train: every variant against '{reference}' (loss/* and grad_norm/* of every step)",
        _ROW.format(*head),
    ]
    for name, r in results.items():
        cells = (name, r["steps"], str(r["identical"]), _fmt(r["first_step"], "d"),
                 r["first_key"] or "-", _fmt(r["first_rel"], ".2e"),
                 _fmt(r.get("last_max_rel"), ".2e"), _fmt(r.get("last_generator"), ".6f"),
                 f"{r['seconds']:.0f}")  # fmt: skip
        lines.append(_ROW.format(*cells))
    return "\n".join(lines)


_ROW = "{:<14} {:>5} {:>9} {:>8} {:<24} {:>9} {:>9} {:>13} {:>6}"
_EVAL_ROW = "{:<14} {:>18} {:>18} {:>9} {:>9}"


def eval_table(results: dict[str, dict], reference: str) -> str:
    base = results[reference]
    lines = [
        f"evaluate: one generator ('{reference}' trained) scored in each variant's env",
        _EVAL_ROW.format("variant", "PSNR", "SSIM", "|dPSNR|", "|dSSIM|"),
    ]
    for name, m in results.items():
        d_psnr, d_ssim = abs(m["psnr"] - base["psnr"]), abs(m["ssim"] - base["ssim"])
        cells = (f"{m['psnr']:.12f}", f"{m['ssim']:.15f}", f"{d_psnr:.2e}", f"{d_ssim:.2e}")
        lines.append(_EVAL_ROW.format(name, *cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--variants", default=",".join(TRAIN_VARIANTS), help="train variants")
    parser.add_argument("--kernels", action="store_true", help="probe single kernels first")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--eval", action="store_true", help="also score one generator per env")
    parser.add_argument("--eval-variants", default=",".join(EVAL_VARIANTS))
    parser.add_argument("--eval-videos", type=int, default=0, help="test videos scored (0: all)")
    parser.add_argument("--committed", action="store_true", help="compare with reports/")
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2fgvi-reproducibility"))
    parser.add_argument("--json", type=Path, help="write every history and comparison here")
    args = parser.parse_args()
    if args.probe:
        probe_kernels(args.probe)
        return
    chosen = [v for v in VARIANTS if v.name in args.variants.split(",")]
    work = args.work.resolve()
    kernels = kernel_table(work, [v for v in VARIANTS if not v.train]) if args.kernels else ""
    if kernels:
        print(kernels, flush=True)
    if args.json and not chosen:
        args.json.write_text(json.dumps({"kernels": kernels.splitlines()}, indent=1) + "\n")
    if not chosen:
        return
    from sample_data import prepared_sample

    from e2fgvi.config import load_params

    data = prepared_sample(work, load_params(ROOT / "params.yaml"))
    histories, results = {}, {}
    for variant in chosen:
        start = time.perf_counter()
        histories[variant.name] = train_variant(
            work, data, variant, args.iterations, args.eval_videos
        )
        seconds = time.perf_counter() - start
        results[variant.name] = {**compare(histories[chosen[0].name], histories[variant.name]),
                                 "seconds": seconds}  # fmt: skip
        print(f"{variant.name}: {results[variant.name]}", file=sys.stderr, flush=True)
    if args.committed:
        committed = read_history(ROOT / "reports" / "train_loss.csv")
        results["committed"] = {**compare(histories[chosen[0].name], committed), "seconds": 0.0}
    print(train_table(results, chosen[0].name))
    scores = {}
    if args.eval:
        for variant in (v for v in VARIANTS if v.name in args.eval_variants.split(",")):
            scores[variant.name] = eval_variant(work, data, work / chosen[0].name, variant)
        print(eval_table(scores, chosen[0].name))
    if args.json:
        args.json.write_text(json.dumps({"kernels": kernels.splitlines(), "train": results,
                                         "histories": histories, "eval": scores},
                                        indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
