"""Training-clip throughput on the embedded sample: clips/s per DataLoader worker.

Builds the sample, prepares it twice (pre-resized to 432x240, and at the original resolution),
then times the real training loader (`e2fgvi.train.loop.make_loader`: 5 local + 3 reference
frames, masks, flip) at the official 432x240 clip size with 0, 1 and 2 workers.
Run: PYTHONPATH=src python benchmarks/dataloader.py [--clips 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from e2fgvi.config import Params, load_params
from e2fgvi.data.prepare import prepare_dataset
from e2fgvi.data.sample import build_sample
from e2fgvi.train.distributed import World
from e2fgvi.train.loop import TrainPaths, make_loader


def clips_per_s(params: Params, root: Path, workers: int, clips: int) -> float:
    train = params.train.model_copy(
        update={"num_workers": workers, "iterations": clips + 2, "batch_size": 1}
    )
    params = params.model_copy(update={"train": train})
    paths = TrainPaths.under(root, root / "run", root / "mlruns")
    batches = iter(make_loader(params, paths, World(0, 0, 1, torch.device("cpu")), 0))
    next(batches), next(batches)  # worker start-up and first decode are not throughput
    start = time.perf_counter()
    for _ in range(clips):
        next(batches)
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40, help="timed clips per setting")
    args = parser.parse_args()
    params = load_params()
    official = params.train.model_copy(update={"width": 432, "height": 240})
    params = params.model_copy(update={"train": official})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_sample(work / "raw", params.data.sample)
        routes = {
            "pre-resized 432x240": params.prepare.model_copy(update={"resize": [432, 240]}),
            "original resolution": params.prepare.model_copy(update={"resize": []}),
        }
        print(f"clips of {official.num_local_frames}+{official.num_ref_frames} frames at 432x240")
        for label, cfg in routes.items():
            root = work / label.split()[0]
            prepare_dataset(work / "raw", root, cfg, min_train_frames=2)
            rates = {w: clips_per_s(params, root, w, args.clips) for w in (0, 1, 2)}
            per_worker = rates[1]
            print(
                f"{label:22s} in-process {rates[0]:6.1f} clips/s | 1 worker {per_worker:6.1f} | "
                f"2 workers {rates[2]:6.1f} ({rates[2] / per_worker:.2f}x of one worker)"
            )


if __name__ == "__main__":
    main()
