"""The data stages at the user's scale: YouTube-VOS-shaped archives of any size through `dvc repro`.

For each size (train videos; test videos in the release's 508 : 3,471 ratio) it builds
all-frames archives of real JPEG frames (3-6 s at 30 fps per video, the given frame size) outside
a scratch copy of this project, points ``data.source: local`` at them, runs ``dvc repro masks``
(download -> prepare -> masks), and prints wall time, the peak RSS of the whole process tree,
bytes on disk per folder (hard links counted once), the no-op ``dvc status`` / ``dvc repro``
times, the masks stage's time and the training dataset's start-up. Then the growth exponent
between the two largest sizes. ``--real`` adds a 1280x720 slice: prepare in one process and on
one process per core, the floor of only reading the archive and writing the same zips, MB/s and
an extrapolation to 50 GB.

Run: PYTHONPATH=src python benchmarks/scale.py --work /scratch/scale --sizes 100,1000,3471 --real
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from _scale_tools import (
    FULL_TEST,
    FULL_TRAIN,
    build_archives,
    disk_use,
    floor_seconds,
    load,
    run_measured,
)

from e2fgvi.config import PrepareParams, load_params
from e2fgvi.data.archive import ARCHIVES
from e2fgvi.data.dataset import TrainClips
from e2fgvi.data.prepare import prepare_dataset, workers_here

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
GB = 1e9


def _scratch_project(repo: Path, archives: Path) -> dict[str, str]:
    """A copy of the project's pipeline (code, dvc.yaml, params, DVC config) on ``archives``."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "params.official.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "PYTHONPATH": str(repo / "src"),
    }
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([VENV_BIN / "dvc", "init", "-q"], cwd=repo, check=True, env=env)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"] = _official_prepare()  # the user's run: the official plan's prepare
    params["data"]["source"] = "local"
    for split, stem in ARCHIVES.items():
        params["data"][split] = {"location": str(archives / f"{stem}.zip"), "sha256": "", "size": 0}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return env


def _official_prepare() -> dict:
    return yaml.safe_load((ROOT / "params.official.yaml").read_text())["prepare"]


def _dvc(repo: Path, env: dict[str, str], *args: str):
    return run_measured([str(VENV_BIN / "dvc"), *args], repo, env)


def _links(path: Path) -> str:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    counts = sorted({p.stat().st_nlink for p in files})
    return ",".join(map(str, counts)) or "-"


def _startup_s(repo: Path) -> float:
    """Seconds to build the training dataset over the prepared index (what each worker does)."""
    params = load_params(repo / "params.yaml")
    data = repo / "data" / "youtube-vos"
    start = time.perf_counter()
    TrainClips(data / "JPEGImages", data / "train.json", params.train, params.masks, params.seed)
    return time.perf_counter() - start


def one_size(work: Path, train: int, size: tuple[int, int], seed: int) -> dict[str, float]:
    """Archives of ``train`` (+ test) videos through the data stages; prints and returns figures."""
    test = max(1, round(train * FULL_TEST / FULL_TRAIN))
    archives = work / f"archives-{train}"
    t0 = time.perf_counter()
    built = build_archives(archives, train, test, size, seed, None)
    print(f"\n== {train} + {test} videos, {built['frames']} frames of {size[0]}x{size[1]}: "
          f"archives {built['archive_bytes'] / GB:.3f} GB built in {time.perf_counter() - t0:.0f} s"
          f" (load {load()})", flush=True)  # fmt: skip
    repo = work / f"repo-{train}"
    env = _scratch_project(repo, archives)
    figures: dict[str, float] = {"videos": train + test, "frames": built["frames"]}
    for stage in ("download", "prepare", "masks"):
        timed = _dvc(repo, env, "repro", "-s", stage)
        figures[stage] = timed.wall_s
        print(f"dvc repro -s {stage:8s} {timed.wall_s:7.1f} s   peak RSS: tree "
              f"{timed.peak_tree_rss / 1e6:6.0f} MB, largest process "
              f"{timed.peak_single_rss / 1e6:6.0f} MB   (load {load()})", flush=True)  # fmt: skip
        figures[f"{stage}_rss_mb"] = timed.peak_tree_rss / 1e6
    status = _dvc(repo, env, "status")
    noop = _dvc(repo, env, "repro", "masks")
    figures["status"], figures["noop"] = status.wall_s, noop.wall_s
    print(f"no-op: dvc status {status.wall_s:.1f} s, dvc repro masks {noop.wall_s:.1f} s"
          f"   (load {load()})")  # fmt: skip
    figures["startup"] = _startup_s(repo)
    print(f"training dataset start-up: {figures['startup'] * 1e3:.1f} ms "
          f"({figures['startup'] * 1e6 / train:.2f} us per training video)")  # fmt: skip
    data = repo / "data"
    folders = {
        "user archives": archives,
        "data/raw": data / "raw",
        "DVC cache": repo / ".dvc" / "cache",
        "data/youtube-vos": data / "youtube-vos",
    }
    usage = disk_use(folders)
    for label, use in usage.items():
        links = _links(folders[label])
        print(f"disk {label:18s} {use['bytes'] / GB:7.3f} GB, of it not a link to a file above "
              f"{use['new_bytes'] / GB:7.3f} GB  (link counts {links})")  # fmt: skip
    extra = sum(u["new_bytes"] for label, u in usage.items() if label != "user archives")
    figures["disk_ratio"] = extra / built["archive_bytes"]
    print(f"disk beside the archives: {extra / GB:.3f} GB = "
          f"{figures['disk_ratio']:.2f} x the archives")  # fmt: skip
    return figures


def exponent(small: dict[str, float], large: dict[str, float], key: str) -> float:
    """Growth exponent b in time ~ frames^b between two sizes."""
    return math.log(large[key] / small[key]) / math.log(large["frames"] / small["frames"])


def real_slice(work: Path, train: int, test: int, frames: int, seed: int) -> None:
    """Real-size frames: prepare in one process, on every core, and the I/O floor; MB/s."""
    archives = work / "archives-real"
    built = build_archives(archives, train, test, (1280, 720), seed, frames)
    megabytes = built["archive_bytes"] / 1e6
    cfg = PrepareParams(**_official_prepare())
    print(f"\n== real-size slice: {train} + {test} videos x {frames} frames of 1280x720, "
          f"{megabytes:.0f} MB; prepare.resize {cfg.resize}, {workers_here()} cores")  # fmt: skip
    outs = {}
    for workers in (1, workers_here()):
        out = work / f"real-out-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        cpu0 = os.times()
        prepare_dataset(archives, out, cfg, min_train_frames=8, workers=workers)
        seconds, cpu1 = time.perf_counter() - start, os.times()
        cpu = sum(cpu1[:4]) - sum(cpu0[:4])
        outs[workers] = seconds
        print(f"prepare, {workers} process(es): {seconds:6.1f} s  {megabytes / seconds:6.1f} MB/s"
              f"  cpu {cpu:.1f} s  (load {load()})", flush=True)  # fmt: skip
    same = all(
        (work / "real-out-1" / "JPEGImages" / p.name).read_bytes() == p.read_bytes()
        for p in (work / f"real-out-{workers_here()}" / "JPEGImages").iterdir()
    )
    print(f"parallel output byte-identical to one process: {same}")
    floor = floor_seconds(archives, work / f"real-out-{workers_here()}", work / "floor-out")
    best = min(outs.values())
    print(f"floor (read the archive through CRC + write the same zips): {floor:.1f} s, "
          f"{megabytes / floor:.1f} MB/s; prepare reaches {100 * floor / best:.0f} % of it"
          f"  (load {load()})")  # fmt: skip
    print(f"EXTRAPOLATION (not a measurement): 50 GB of archives at {megabytes / best:.1f} MB/s "
          f"= {50e3 / (megabytes / best) / 60:.0f} min on this machine's {workers_here()} cores; "
          f"{50e3 / (megabytes / floor) / 60:.0f} min at the floor")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (outside git)")
    parser.add_argument("--sizes", default=f"100,1000,{FULL_TRAIN}", help="train video counts")
    parser.add_argument("--frame-size", default="64x36", help="WxH of the generated frames")
    parser.add_argument("--real", action="store_true", help="also the 1280x720 slice")
    parser.add_argument("--real-videos", default="20,2", help="train,test videos of the slice")
    parser.add_argument("--real-frames", type=int, default=135)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch data")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.frame_size.split("x"))
    print(f"host: {os.uname().nodename}, {workers_here()} cores, load {load()}; "
          f"{PrepareParams.__name__} from params.yaml")  # fmt: skip
    results = [one_size(args.work, int(n), size, args.seed) for n in args.sizes.split(",") if n]
    if len(results) >= 2:
        small, large = results[-2], results[-1]
        for key in ("prepare", "masks", "noop", "startup"):
            print(f"growth exponent of {key} between {small['videos']:.0f} and "
                  f"{large['videos']:.0f} videos: {exponent(small, large, key):.2f}")  # fmt: skip
    if args.real:
        train, test = (int(x) for x in args.real_videos.split(","))
        real_slice(args.work, train, test, args.real_frames, args.seed)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
