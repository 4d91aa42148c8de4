"""Faster ways from a 1280x720 JPEG to a 432x240 training frame: speed and pixel difference.

    PYTHONPATH=src python benchmarks/loader_options.py [--frames 40] [--repeats 5]

The exact path (what the official loader computes, and ours today) decodes the full frame and
resizes it with PIL's bicubic filter. The options decode at a reduced size first (libjpeg DCT
scaling: OpenCV's IMREAD_REDUCED_COLOR_2/4, PIL's draft mode) or resize differently. Each is
timed per frame (median over rounds; options interleaved within each round, one thread), and
compared with the exact frames: PSNR, mean and max absolute difference in 8-bit values.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from clip_data import encode_jpeg, read_clip
from interleave import load_avg, machine, print_table
from ours_api import sample_clip
from PIL import Image

SIZE = (432, 240)  # (w, h)
BICUBIC = Image.Resampling.BICUBIC


def _cv2_decode(data: bytes, flag: int) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), flag), cv2.COLOR_BGR2RGB)


def _pil_resize(rgb: np.ndarray, **kw) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize(SIZE, BICUBIC, **kw))


def exact(data: bytes) -> np.ndarray:
    """Ours today: OpenCV full decode, PIL bicubic."""
    return _pil_resize(_cv2_decode(data, cv2.IMREAD_COLOR))


def pil_full(data: bytes) -> np.ndarray:
    """The official loader: PIL full decode, PIL bicubic."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(SIZE, BICUBIC))


def pil_draft(data: bytes) -> np.ndarray:
    """PIL draft mode: libjpeg decodes at the smallest 1/2^k scale still >= 432x240."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", SIZE)
    return np.asarray(image.convert("RGB").resize(SIZE, BICUBIC))


def cv2_reduced_2(data: bytes) -> np.ndarray:
    """OpenCV decode at 1/2 (640x360), PIL bicubic."""
    return _pil_resize(_cv2_decode(data, cv2.IMREAD_REDUCED_COLOR_2))


def cv2_reduced_4(data: bytes) -> np.ndarray:
    """OpenCV decode at 1/4 (320x180), PIL bicubic (upsamples)."""
    return _pil_resize(_cv2_decode(data, cv2.IMREAD_REDUCED_COLOR_4))


def reducing_gap(data: bytes) -> np.ndarray:
    """OpenCV full decode, PIL bicubic with reducing_gap=1 (2x box pre-reduction)."""
    return _pil_resize(_cv2_decode(data, cv2.IMREAD_COLOR), reducing_gap=1.0)


def cv2_area(data: bytes) -> np.ndarray:
    """OpenCV full decode, cv2.resize INTER_AREA."""
    return cv2.resize(_cv2_decode(data, cv2.IMREAD_COLOR), SIZE, interpolation=cv2.INTER_AREA)


def cv2_reduced_2_area(data: bytes) -> np.ndarray:
    """OpenCV decode at 1/2, cv2.resize INTER_AREA."""
    small = _cv2_decode(data, cv2.IMREAD_REDUCED_COLOR_2)
    return cv2.resize(small, SIZE, interpolation=cv2.INTER_AREA)


OPTIONS: dict[str, Callable[[bytes], np.ndarray]] = {
    "exact": exact,
    "pil_full": pil_full,
    "pil_draft": pil_draft,
    "cv2_reduced_2": cv2_reduced_2,
    "cv2_reduced_4": cv2_reduced_4,
    "reducing_gap_1": reducing_gap,
    "cv2_area": cv2_area,
    "cv2_reduced_2_area": cv2_reduced_2_area,
}


def components(sources: list[bytes], repeats: int) -> list[list[str]]:
    """ms per frame of the exact path's parts: decoding, and resizing a decoded frame."""
    decoded = [_cv2_decode(d, cv2.IMREAD_COLOR) for d in sources]
    parts = {
        "OpenCV full decode": lambda i: _cv2_decode(sources[i], cv2.IMREAD_COLOR),
        "PIL full decode": lambda i: Image.open(io.BytesIO(sources[i])).convert("RGB"),
        "OpenCV 1/2 decode": lambda i: _cv2_decode(sources[i], cv2.IMREAD_REDUCED_COLOR_2),
        "PIL bicubic resize of a decoded frame": lambda i: _pil_resize(decoded[i]),
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            start = time.perf_counter()
            for i in range(len(sources)):
                fn(i)
            times[name].append((time.perf_counter() - start) / len(sources))
    return [[name, f"{statistics.median(t) * 1e3:.2f}"] for name, t in times.items()]


def difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """PSNR (dB), mean and max absolute difference of uint8 images."""
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(d**2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    return psnr, float(np.mean(np.abs(d))), int(np.max(np.abs(d)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames of the clip")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the sources")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # a DataLoader worker is one process; keep the decoders to one thread
    frames = read_clip(sample_clip(), args.frames)
    sources = [encode_jpeg(f, args.quality) for f in frames]
    print(f"machine: {machine()}; load average at start: {load_avg()[0]:.2f}")
    print(
        f"{len(sources)} frames {frames[0].shape[1]}x{frames[0].shape[0]} JPEG q{args.quality}"
        f" -> {SIZE[0]}x{SIZE[1]}; {args.repeats} interleaved rounds"
    )
    reference = [exact(d) for d in sources]
    times: dict[str, list[float]] = {name: [] for name in OPTIONS}
    for _ in range(args.repeats):
        for name, fn in OPTIONS.items():
            start = time.perf_counter()
            for data in sources:
                fn(data)
            times[name].append((time.perf_counter() - start) / len(sources))
    base = statistics.median(times["exact"])
    rows = []
    for name, fn in OPTIONS.items():
        diffs = [difference(fn(d), ref) for d, ref in zip(sources, reference, strict=True)]
        t = statistics.median(times[name])
        psnr = min(d[0] for d in diffs)
        rows.append(
            [
                name,
                f"{t * 1e3:.2f}",
                f"{base / t:.2f}x",
                "identical" if psnr == float("inf") else f"{psnr:.1f}",
                f"{statistics.mean(d[1] for d in diffs):.2f}",
                str(max(d[2] for d in diffs)),
                fn.__doc__.splitlines()[0],
            ]
        )
    print(f"load average at end: {load_avg()[0]:.2f}\n")
    header = ["option", "ms/frame", "speed-up", "min PSNR dB", "mean |d|", "max |d|", "what"]
    print_table(header, rows)
    print()
    print_table(["part of the exact path", "ms/frame"], components(sources, args.repeats))


if __name__ == "__main__":
    main()
