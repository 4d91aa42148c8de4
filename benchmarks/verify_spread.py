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
from reproducibility import ROOT, Variant, _run, read_history, train_variant

from e2fgvi.train.session import loss_means
from e2fgvi.verify.tolerances import load_tolerances
from e2fgvi.verify.verdict import FAIL, judge_all, passed

_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
_SSE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
# Each a machine our users have, emulated on this one (what a CPU without AVX-512 or with
# another core count computes differently: kernels' instruction set and reduction split).
MACHINES = (
    Variant("default", what="this CPU as it is: AVX-512 (ATen and oneDNN), 2 threads"),
    Variant("threads-1", env={"OMP_NUM_THREADS": "1"}, what="1 intra-op thread"),
    Variant("avx2", env=_AVX2, what="an AVX2 CPU without AVX-512 (ATen and oneDNN at AVX2)"),
    Variant("threads-4", env={"OMP_NUM_THREADS": "4"}, what="4 intra-op threads"),
    Variant("no-simd", env=_SSE, what="a CPU without AVX (ATen without SIMD, oneDNN at SSE4.1)"),
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


# Measured elsewhere and reported to the project: a 2-core AMD EPYC with AVX2 and no AVX-512,
# `make repro` on a fresh clone (venv and image alike); only these figures were reported.
EXTERNAL = {
    "what": "external: AMD EPYC, AVX2 without AVX-512, 2 cores (reported, not run here)",
    "train": {"loss_discriminator_real": 0.8257},
    "eval": {"psnr": 22.7417, "ssim": 0.83010},
}


def committed() -> dict:
    """The committed results as a machine entry (made on this machine kind, default settings)."""
    reports = ROOT / "reports"
    return {
        "what": "committed reports/ (this CPU, default settings)",
        "train": json.loads((reports / "train.json").read_text()),
        "eval": json.loads((reports / "eval" / "metrics.json").read_text()),
        "history": read_history(reports / "train_loss.csv"),
    }


def flat_metrics(machine: dict, iterations: int) -> dict[str, dict[str, object]]:
    """What verify compares, as DVC names it: train.json (loss_mean from the history) and eval."""
    train = {k: v for k, v in machine["train"].items() if not isinstance(v, dict)}
    if machine.get("history"):
        means = loss_means(machine["history"], iterations)
        train |= {f"loss_mean.{k}": v for k, v in means.items()}
    scored = {k: machine["eval"][k] for k in ("psnr", "ssim") if k in machine["eval"]}
    return {"reports/train.json": train, "reports/eval/metrics.json": scored}


def spread_table(machines: dict[str, dict], iterations: int) -> str:
    """Per metric: the committed value, each machine's difference, the largest relative one."""
    flats = {name: flat_metrics(m, iterations) for name, m in machines.items()}
    base = flats["committed"]
    names = [n for n in flats if n != "committed"]
    lines = ["metric".ljust(44) + f"{'committed':>12}" + "".join(f"{n[:12]:>13}" for n in names)
             + "  max |rel|"]  # fmt: skip
    for path, values in base.items():
        for key, old in values.items():
            if not isinstance(old, float) or key.startswith(("step_", "clips_")):
                continue
            rels = [(flats[n][path].get(key), n) for n in names]
            cells = "".join(
                f"{(new - old) / abs(old):>+13.2%}" if new is not None else f"{'-':>13}"
                for new, _ in rels
            )
            worst = max((abs(new - old) / abs(old) for new, _ in rels if new is not None),
                        default=0.0)  # fmt: skip
            lines.append(f"{path.split('/')[-1]}:{key}".ljust(44) + f"{old:>12.6g}{cells}"
                         f"  {worst:.2%}")  # fmt: skip
    return "\n".join(lines)


def verdicts(machines: dict[str, dict], iterations: int) -> str:
    """Each machine judged against the committed results by verify.yaml, as verify would."""
    tolerances = load_tolerances(ROOT / "verify.yaml")
    base = flat_metrics(machines["committed"], iterations)
    lines = []
    for name, machine in machines.items():
        now = flat_metrics(machine, iterations)
        diff = {p: {k: {"old": v, "new": now[p].get(k)} for k, v in values.items()
                    if k in now[p]} for p, values in base.items()}  # fmt: skip
        rows = judge_all(diff, tolerances)
        failed = [f"{r.metric.split(':')[1]} {r.diff:.4g} > {r.tolerance}" for r in rows
                  if r.verdict == FAIL]  # fmt: skip
        verdict = "REPRODUCED" if passed(rows) else "NOT REPRODUCED: " + "; ".join(failed)
        lines.append(f"{name:<16} {len(rows)} metrics judged: {verdict}")
    return "\n".join(lines)


def report(out: dict) -> str:
    machines = {"committed": committed(), **out["machines"], "external-avx2": EXTERNAL}
    iterations = out["iterations"]
    return (
        f"{out['cpu']}; {iterations} iterations of the sample profile; differences relative to "
        f"the committed value\n{spread_table(machines, iterations)}\n\n"
        f"verify.yaml against the committed results (the metrics each machine has)\n"
        f"{verdicts(machines, iterations)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--variants", default=",".join(v.name for v in MACHINES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2fgvi-spread"))
    parser.add_argument("--json", type=Path, default=Path("/tmp/e2fgvi-spread.json"))
    parser.add_argument("--table", type=Path, help="only print the table of a --json file")
    args = parser.parse_args()
    if args.table:
        print(report(json.loads(args.table.read_text())))
        return
    from sample_data import prepared_sample

    from e2fgvi.config import load_params

    work = args.work.resolve()
    data = prepared_sample(work, load_params(ROOT / "params.yaml"))
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in cpuinfo if "model name" in x), "unknown")
    out = {"cpu": cpu, "iterations": args.iterations, "machines": {}}
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    out["profile"] = {k: params[k] for k in ("width", "height", "num_local_frames", "lr")}
    by_name = {v.name: v for v in MACHINES}
    for variant in (by_name[name] for name in args.variants.split(",")):
        out["machines"][variant.name] = run_machine(work, data, variant, args.iterations)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        done = out["machines"][variant.name]
        print(f"{variant.name}: {done['train']} {done['eval']}", file=sys.stderr, flush=True)
    print(report(out))


if __name__ == "__main__":
    main()
