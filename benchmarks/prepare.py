"""Prepare throughput on the embedded sample, with and without pre-resize, and its fidelity.

Prints frames/s and MB/s (source JPEG bytes) for three prepare settings, the per-frame cost a
training loader pays to read a frame (decode + resize vs decode of a pre-resized frame), and the
PSNR between the two routes, and what checking a kept frame costs (full vs 1/8-scale decode).
Run: PYTHONPATH=src python benchmarks/prepare.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from e2fgvi.config import PrepareParams, load_params
from e2fgvi.data.archive import ARCHIVES, SourceArchive
from e2fgvi.data.frames import VideoZip, decode_jpeg, resize_frame
from e2fgvi.data.prepare import prepare_dataset
from e2fgvi.data.sample import build_sample


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def time_prepare(raw: Path, work: Path, label: str, cfg: PrepareParams) -> Path:
    out = work / label
    start = time.perf_counter()
    report = prepare_dataset(raw, out, cfg, min_train_frames=2)
    seconds = time.perf_counter() - start
    frames = sum(report[s]["frames"] for s in ARCHIVES)
    megabytes = sum(report[s]["bytes_in"] for s in ARCHIVES) / 1e6
    out_mb = sum(report[s]["bytes_out"] for s in ARCHIVES) / 1e6
    print(
        f"{label:28s} {seconds:6.2f} s  {frames / seconds:7.1f} frames/s  "
        f"{megabytes / seconds:6.1f} MB/s in  ({out_mb:.1f} MB out)"
    )
    return out


def loader_cost(raw: Path, resized: Path, size: tuple[int, int]) -> None:
    """Per-frame read cost and PSNR: resize at load time vs reading a pre-resized frame."""
    scores, at_load, pre = [], 0.0, 0.0
    count = 0
    for stem in ARCHIVES.values():
        with SourceArchive(raw / f"{stem}.zip") as source:
            for video, infos in source.videos.items():
                frames = VideoZip(resized / "JPEGImages" / f"{video}.zip")
                for index, info in enumerate(infos):
                    data = source.read(info)
                    t0 = time.perf_counter()
                    reference = resize_frame(decode_jpeg(data, info.filename), size)
                    t1 = time.perf_counter()
                    small = frames.read(index)
                    t2 = time.perf_counter()
                    at_load, pre, count = at_load + t1 - t0, pre + t2 - t1, count + 1
                    scores.append(psnr(reference, small))
    print(f"loader, resize at load time: {1e3 * at_load / count:6.2f} ms/frame")
    print(
        f"loader, pre-resized frame:   {1e3 * pre / count:6.2f} ms/frame "
        f"({at_load / pre:.1f}x faster)"
    )
    print(
        f"PSNR pre-resized vs resize-at-load over {count} frames: mean {np.mean(scores):.2f} dB,"
        f" min {np.min(scores):.2f} dB, max {np.max(scores):.2f} dB"
    )


def verify_cost(raw: Path) -> None:
    """Per-frame cost of checking a kept frame: a full decode vs prepare's 1/8-scale decode."""
    full = reduced = 0.0
    count = 0
    for stem in ARCHIVES.values():
        with SourceArchive(raw / f"{stem}.zip") as source:
            for infos in source.videos.values():
                for info in infos:
                    data = source.read(info)
                    t0 = time.perf_counter()
                    decode_jpeg(data, info.filename)
                    t1 = time.perf_counter()
                    decode_jpeg(data, info.filename, reduction=8)
                    full, reduced = full + t1 - t0, reduced + time.perf_counter() - t1
                    count += 1
    print(
        f"verify a kept frame: full decode {1e3 * full / count:.2f} ms/frame, 1/8-scale decode "
        f"{1e3 * reduced / count:.2f} ms/frame ({full / reduced:.1f}x faster; {count} frames)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    size = tuple(params.prepare.resize) or (432, 240)
    print(
        f"threads: {os.cpu_count()}; pre-resize target {size[0]}x{size[1]}, "
        f"JPEG quality {params.prepare.jpeg_quality}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        build_sample(work / "raw", params.data.sample)
        print(f"{'build sample':28s} {time.perf_counter() - start:6.2f} s")
        quality = params.prepare.jpeg_quality
        time_prepare(
            work / "raw",
            work,
            "copy (no resize, no verify)",
            PrepareParams(resize=[], verify_jpeg=False),
        )
        time_prepare(
            work / "raw", work, "verify (no resize)", PrepareParams(resize=[], verify_jpeg=True)
        )
        resized = time_prepare(
            work / "raw",
            work,
            f"pre-resize {size[0]}x{size[1]}",
            PrepareParams(resize=list(size), jpeg_quality=quality),
        )
        loader_cost(work / "raw", resized, size)
        verify_cost(work / "raw")


if __name__ == "__main__":
    main()
