"""500,000 iterations of the real training loop at the official cadence, networks stood in.

The loop, cost meter, MLflow tracking, sample strips, checkpoints and history are the real code;
benchmarks/standin.py swaps in microsecond networks, step and batches (in the child process
only). The run goes in a child process that is SIGKILLed at ``--kill-at`` and resumed, as a
preempted job would be. Printed: iteration rate and the loop's own overhead per iteration, the
child's RSS over the run, the time to resume, the MLflow store's size and its run-page query
times, the history's and the checkpoints' disk. ``--preempt K`` instead kills a run at K random
points, resumes it each time, and compares every logged value with an uninterrupted run.

Run: PYTHONPATH=src python benchmarks/long_run.py --work /scratch/long --iterations 500000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import standin
import yaml
from _scale_tools import load
from standin import stand_in_params

from e2fgvi.config import load_params
from e2fgvi.tracking.queries import metric_history, search_runs
from e2fgvi.tracking.uri import tracking_uri
from e2fgvi.train.distributed import init_world
from e2fgvi.train.steps import Clips

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
MB = 1e6
# The official plan's cadence: log, sample strip and checkpoint every N iterations.
OFFICIAL = (100, 5000, 5000)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _last_step(work: Path) -> int:
    """The newest logged iteration (the history's last complete line), 0 before the first."""
    history = _history(work)
    try:
        with history.open("rb") as handle:
            handle.seek(max(0, history.stat().st_size - 4096))
            lines = handle.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines[1:] if len(lines) > 1 else []):
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return 0


def _logged_values(history: Path) -> list[list[str]]:
    """The history's deterministic columns (step, losses, learning rates, guard counts);
    the meter's timings differ between any two runs."""
    lines = history.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, k in enumerate(header) if k == "step" or k.split("/")[0] in _DETERMINISTIC]
    return [[row.split(",")[i] for i in keep] for row in lines]


_DETERMINISTIC = ("loss", "lr", "guard")


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


class Child:
    """One stand-in training process, watched: its RSS and progress over time."""

    def __init__(self, params_file: Path, folder: Path, first_step_file: Path) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{BENCH}"}
        env["STANDIN_FIRST_STEP"] = str(first_step_file)
        self.started = time.time()
        self.log = (folder / "child.log").open("ab")  # closed when the child ends
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "standin.py"), str(params_file), str(folder)],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        self.samples: list[tuple[float, int, int]] = []  # (seconds, iteration, RSS bytes)
        self.killed = False

    def watch(self, work: Path, kill_at: int | None, every_s: float) -> int:
        """Sample until the child ends (or is SIGKILLed once it logged ``kill_at``)."""
        while self.proc.poll() is None:
            step = _last_step(work)
            with contextlib.suppress(OSError):
                self.samples.append((time.time() - self.started, step, _rss(self.proc.pid)))
            if kill_at is not None and step >= kill_at:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                self.killed = self.proc.returncode == -signal.SIGKILL
                self.log.close()
                return step
            if len(self.samples) % 60 == 1:  # progress in the log as the run goes
                t, _, rss = self.samples[-1]
                print(f"  t={t:7.0f} s  iteration {step:7d}  RSS {rss / MB:7.1f} MB"
                      f"  (load {load()})", flush=True)  # fmt: skip
            near = kill_at is not None and step >= kill_at - 20_000  # then poll often: land it
            time.sleep(0.02 if near else every_s)
        self.log.close()
        if self.proc.returncode:
            raise SystemExit(f"stand-in training failed ({self.proc.returncode}): see child.log")
        return _last_step(work)


def _plan(work: Path, base: Path, iterations: int, overrides: dict) -> Path:
    params = stand_in_params(base, iterations, overrides)
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    return path


def _history(work: Path) -> Path:
    found = list((work / "run" / "checkpoints").glob("*/history.csv"))
    return found[0] if found else work / "run" / "checkpoints" / "none" / "history.csv"


def _report_rss(samples: list[tuple[float, int, int]], iterations: int) -> None:
    start = next((s[1] for s in samples if s[1] > 0), 0)  # the first iteration logged
    warm = [s for s in samples if s[1] >= start + iterations // 20]
    for t, step, rss in samples[:: max(1, len(samples) // 12)]:
        print(f"  t={t:7.0f} s  iteration {step:7d}  RSS {rss / MB:7.1f} MB")
    if warm:
        rss = [s[2] for s in warm]
        low, high = min(rss) / MB, max(rss) / MB
        print(f"RSS after warm-up (from iteration {start + iterations // 20}): min {low:.1f} MB,"
              f" max {high:.1f} MB, spread {high - low:.1f} MB")  # fmt: skip


def _rate(samples: list[tuple[float, int, int]]) -> float:
    """Seconds per iteration between the first logged iteration and the last sample."""
    steady = [s for s in samples if s[1] > 0]
    if len(steady) < 2:
        return float("nan")
    (t0, s0, _), (t1, s1, _) = steady[0], steady[-1]
    return (t1 - t0) / max(s1 - s0, 1)


def _stand_in_cost(params_file: Path, steps: int = 5000) -> float:
    """Seconds per iteration of the stand-ins alone (batch + step), without the loop."""
    params = load_params(params_file)
    world = init_world("cpu")
    nets = standin.build_nets(params, None, world)
    batches = standin.make_loader(params, None, world, 0)
    steps = min(steps, params.train.iterations)
    start = time.perf_counter()
    for _ in range(steps):
        frames, masks = next(batches)
        standin.train_step(nets, Clips(frames, masks, params.train.num_local_frames), params, world)
    return (time.perf_counter() - start) / steps


def _store_figures(work: Path) -> None:
    uri = tracking_uri(work / "mlruns")
    t_cold = time.perf_counter()
    search_runs(uri, ["e2fgvi"])  # the first call also imports MLflow and opens the store
    t0 = time.perf_counter()
    runs = search_runs(uri, ["e2fgvi"])
    t1 = time.perf_counter()
    points = metric_history(uri, runs[0].run_id, "loss/generator")
    t2 = time.perf_counter()
    db = work / "mlruns" / "mlflow.db"
    print(f"MLflow store: {len(runs)} run(s); {_du(work / 'mlruns') / MB:.1f} MB "
          f"(database {_du(db) / MB:.1f} MB, artifacts {(_du(work / 'mlruns') - _du(db)) / MB:.1f}"
          f" MB); search_runs {1e3 * (t1 - t0):.0f} ms (first call, with imports and store "
          f"opening: {t0 - t_cold:.1f} s); metric history of loss/generator "
          f"({len(points)} points) {1e3 * (t2 - t1):.0f} ms  (load {load()})")  # fmt: skip
    folder = _history(work).parent
    samples = folder / "samples"
    print(f"history.csv {_du(_history(work)) / MB:.2f} MB; checkpoints "
          f"{sum(_du(p) for p in folder.glob('*.pth')) / MB:.2f} MB in "
          f"{len(list(folder.glob('*.pth')))} files; sample strips {_du(samples) / MB:.2f} MB in "
          f"{len(list(samples.glob('*.png')))} files; cost snapshots "
          f"{_du(folder / 'cost') / MB:.2f} MB")  # fmt: skip


def long_run(work: Path, iterations: int, kill_at: int, every_s: float) -> None:
    params_file = _plan(work, ROOT / "params.official.yaml", iterations, {})
    print(f"plan: params.official.yaml cadence, {iterations} iterations on CPU (stand-in nets); "
          f"host {os.uname().nodename}, {os.cpu_count()} cores, load {load()}",
          flush=True)  # fmt: skip
    first = Child(params_file, work, work / "first_step_1")
    killed = first.watch(work, kill_at, every_s)
    print(f"SIGKILLed after iteration {killed} was logged, {time.time() - first.started:.0f} s "
          f"(load {load()})", flush=True)  # fmt: skip
    seconds_per_it = _rate(first.samples)
    second = Child(params_file, work, work / "first_step_2")
    second.watch(work, None, every_s)
    if not (work / "first_step_2").exists():
        raise SystemExit("the kill came after the last iteration: lower --kill-at")
    resumed_in = float((work / "first_step_2").read_text()) - second.started
    print(f"resume after the kill: first iteration after {resumed_in:.1f} s (process start, "
          f"imports, checkpoint load, MLflow re-attach); finished in "
          f"{time.time() - second.started:.0f} s  (load {load()})")  # fmt: skip
    stand_in = _stand_in_cost(params_file)
    print(f"per iteration: {1e6 * seconds_per_it:.0f} us with the loop, {1e6 * stand_in:.0f} us "
          f"the stand-ins alone; the loop's own overhead {1e6 * (seconds_per_it - stand_in):.0f}"
          f" us/iteration (every log, strip and checkpoint amortised)")  # fmt: skip
    print("RSS of the first process (killed):")
    _report_rss(first.samples, iterations)
    print("RSS of the resumed process:")
    _report_rss(second.samples, iterations)
    _store_figures(work)


def preempt(
    work: Path, iterations: int, kills: int, seed: int, cadence: tuple[int, int, int] = OFFICIAL
) -> dict[str, object]:
    """K SIGKILLs at random iterations, resumed each time, vs an uninterrupted run."""
    log_every, image_every, checkpoint_every = cadence
    overrides = {"train": {"log_every": log_every, "image_every": image_every,
                           "checkpoint_every": checkpoint_every}}  # fmt: skip
    reference, broken = work / "uninterrupted", work / "preempted"
    for folder in (reference, broken):
        folder.mkdir(parents=True)
        _plan(folder, ROOT / "params.official.yaml", iterations, overrides)
    Child(reference / "params.yaml", reference, reference / "first").watch(reference, None, 0.05)
    points = sorted(random.Random(seed).sample(range(1, iterations - log_every), kills))
    print(f"kill points (iterations): {points}  (load {load()})", flush=True)
    landed = 0
    for n, point in enumerate([*points, None]):
        child = Child(broken / "params.yaml", broken, broken / f"first_{n}")
        child.watch(broken, point, 0.02)
        landed += child.killed
    same = _logged_values(_history(reference)) == _logged_values(_history(broken))
    uri_a, uri_b = (tracking_uri(f / "mlruns") for f in (reference, broken))
    runs = search_runs(uri_b, ["e2fgvi"])
    keys = ("loss/generator", "loss/discriminator", "lr/generator")
    a = {k: metric_history(uri_a, search_runs(uri_a, ["e2fgvi"])[0].run_id, k) for k in keys}
    b = {k: metric_history(uri_b, runs[0].run_id, k) for k in keys}
    # MLflow keeps every point logged: the iterations a resume recomputes (from the checkpoint
    # to the kill) are there twice, with the same value; one value per iteration is the test.
    unique = {k: sorted(set(v)) for k, v in b.items()}
    one_each = all(len({step for step, _ in v}) == len(v) for v in unique.values())
    result = {"kills": landed, "identical_history": same, "runs": len(runs),
              "identical_mlflow": one_each and unique == a,
              "points": len(unique["loss/generator"])}  # fmt: skip
    print(f"{landed} SIGKILLs landed; logged values in history.csv identical to the "
          f"uninterrupted run's: {same}; MLflow runs: {len(runs)}; {', '.join(keys)} identical: "
          f"{result['identical_mlflow']} ({result['points']} iterations each; "
          f"{len(b['loss/generator']) - result['points']} recomputed ones logged twice)"
          f"  (load {load()})")  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (outside git)")
    parser.add_argument("--iterations", type=int, default=500_000)
    parser.add_argument("--kill-at", type=int, default=None, help="default: iterations - 1000")
    parser.add_argument("--preempt", type=int, default=0, help="random kills (comparison mode)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    if args.preempt:
        preempt(args.work, args.iterations, args.preempt, args.seed)
    else:
        kill_at = args.kill_at or args.iterations - 1000
        long_run(args.work, args.iterations, kill_at, args.every)


if __name__ == "__main__":
    main()
