"""How far apart do the pipeline's metrics land on different machines? The spread verify must allow.

Runs the real train stage (the pipeline's 40 iterations of the sample profile, as dvc.yaml runs
it) and then the real evaluate stage on its own generator (both test videos, the fixed masks),
once per machine variant: CPU instruction set as ATen and oneDNN see it, oneDNN on/off, and the
intra-op thread count. Every variant's ``train.json``, ``metrics.json`` and loss history are kept
(``--json``, rewritten after each variant, so a cut-off run keeps what it measured), and the
table gives, per metric verify judges, the value in each variant and the largest difference.

    PYTHONPATH=src .venv/bin/python benchmarks/verify_spread.py \
        [--variants default,threads-1,avx2] [--work /tmp/e2fgvi-spread] [--json out.json]
    PYTHONPATH=src .venv/bin/python benchmarks/verify_spread.py --table out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml
from reproducibility import ROOT, Variant, _run, train_variant

_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
_SSE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
# Each a machine our users have, emulated on this one (what a CPU without AVX-512 or with
# another core count computes differently: kernels' instruction set and reduction split).
MACHINES = (
    Variant("default", what="this CPU as it is: AVX-512 (ATen and oneDNN), 2 threads"),
    Variant("threads-1", env={"OMP_NUM_THREADS": "1"}, what="1 intra-op thread"),
    Variant("avx2", env=_AVX2, what="an AVX2 CPU without AVX-512 (ATen and oneDNN at AVX2)"),
    Variant("threads-4", env={"OMP_NUM_THREADS": "4"}, what="4 intra-op threads"),
    Variant("sse", env=_SSE, what="a CPU without AVX (ATen without SIMD, oneDNN at SSE4.1)"),
    Variant("onednn-off", mkldnn=False, what="torch.backends.mkldnn.enabled = False"),
    Variant("avx2-threads-1", env={**_AVX2, "OMP_NUM_THREADS": "1"}, what="AVX2, 1 thread"),
    Variant("threads-8", env={"OMP_NUM_THREADS": "8"}, what="8 intra-op threads"),
    Variant("onednn-avx2", env={"ONEDNN_MAX_CPU_ISA": "AVX2"}, what="only oneDNN at AVX2"),
    Variant("aten-avx2", env={"ATEN_CPU_CAPABILITY": "avx2"}, what="only ATen at AVX2"),
    Variant("avx2-threads-4", env={**_AVX2, "OMP_NUM_THREADS": "4"}, what="AVX2, 4 threads"),
    Variant("again", what="this CPU as it is, a second time"),
)


def run_machine(work: Path, data: Path, variant: Variant, iterations: int) -> dict:
    """Train and evaluate in ``variant``'s environment; the figures verify compares."""
    start = time.perf_counter()
    history = train_variant(work, data, variant, iterations, eval_videos=0)
    trained = time.perf_counter() - start
    folder = work / variant.name
    _run("e2fgvi.stages.evaluate", ["--data", str(data),
         "--checkpoint", "run/generator.pth", "--pretrained", "none.pt",
         "--run", "run/mlflow_run.json", "--mlruns", "mlruns", "--out", "eval"],
         folder, variant)  # fmt: skip
    return {
        "what": variant.what,
        "env": variant.env,
        "mkldnn": variant.mkldnn,
        "train": json.loads((folder / "train.json").read_text()),
        "eval": json.loads((folder / "eval" / "metrics.json").read_text()),
        "history": history,
        "train_s": trained,
        "eval_s": time.perf_counter() - start - trained,
        "load": os.getloadavg(),
    }


def spread_table(machines: dict[str, dict]) -> str:
    """Per metric: each machine's value and the largest difference between any two."""
    first = next(iter(machines.values()))
    keys = [f"train.json:{k}" for k in sorted(first["train"])]
    keys += [f"eval/metrics.json:{k}" for k in ("psnr", "ssim")]
    lines = ["metric".ljust(40) + "".join(f"{n[:13]:>14}" for n in machines) + "  max diff"]
    for key in keys:
        file, name = key.split(":")
        part = "train" if file == "train.json" else "eval"
        values = [m[part].get(name) for m in machines.values()]
        if not all(isinstance(v, (int, float)) for v in values):
            continue
        cells = "".join(f"{v:>14.6g}" for v in values)
        lines.append(f"{key:<40}{cells}  {max(values) - min(values):.3g}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--variants", default=",".join(v.name for v in MACHINES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2fgvi-spread"))
    parser.add_argument("--json", type=Path, default=Path("/tmp/e2fgvi-spread.json"))
    parser.add_argument("--table", type=Path, help="only print the table of a --json file")
    args = parser.parse_args()
    if args.table:
        print(spread_table(json.loads(args.table.read_text())["machines"]))
        return
    from sample_data import prepared_sample

    from e2fgvi.config import load_params

    work = args.work.resolve()
    data = prepared_sample(work, load_params(ROOT / "params.yaml"))
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        "unknown",
    )
    out = {"cpu": cpu, "iterations": args.iterations, "machines": {}}
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    out["profile"] = {k: params[k] for k in ("width", "height", "num_local_frames", "lr")}
    by_name = {v.name: v for v in MACHINES}
    for variant in (by_name[name] for name in args.variants.split(",")):
        out["machines"][variant.name] = run_machine(work, data, variant, args.iterations)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        done = out["machines"][variant.name]
        print(f"{variant.name}: {done['train']} {done['eval']}", file=sys.stderr, flush=True)
    print(spread_table(out["machines"]))


if __name__ == "__main__":
    main()
