"""The official sliding-window completion of a whole video (docs/official-e2fgvi.md §5.1).

For f = 0, s, 2s, … (s = neighbour stride) a window takes the neighbours [f−s, f+s] as local
frames plus every ``ref_length``-th frame of the whole video that is not a neighbour. Each
window's local predictions are truncated to uint8, composited with the ground truth through the
dilated mask, and folded into the running result by ``new = 0.5·old + 0.5·this`` in float32, so
frames in three windows end up weighted 0.25/0.25/0.5 in window order.

The network is any ``WindowModel``: ``model(masked (b, t, 3, h, w) in [-1, 1], num_local)
-> (b·t, 3, h, w) in [-1, 1]``. Frames stay on the CPU; only one batch of windows is on the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch

WindowModel = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Window:
    """One model call: local frames (``neighbors``) followed by global references (``refs``)."""

    neighbors: tuple[int, ...]
    refs: tuple[int, ...]

    @property
    def frames(self) -> list[int]:
        return [*self.neighbors, *self.refs]


def window_schedule(length: int, neighbor_stride: int, ref_length: int) -> list[Window]:
    """The windows of a ``length``-frame video, in the order the official loop runs them."""
    windows = []
    for f in range(0, length, neighbor_stride):
        neighbors = tuple(range(max(0, f - neighbor_stride), min(length, f + neighbor_stride + 1)))
        refs = tuple(i for i in range(0, length, ref_length) if i not in neighbors)
        windows.append(Window(neighbors, refs))
    return windows


def dilate_mask(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary (h, w) hole mask (nonzero = hole) grown by a 3x3 cross ``iterations`` times."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if iterations == 0:
        return binary
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    return cv2.dilate(binary, cross, iterations=iterations)


def masked_input(frames: np.ndarray, masks: np.ndarray) -> torch.Tensor:
    """(t, h, w, 3) uint8 frames and (t, h, w) {0,1} masks -> (t, 3, h, w) in [-1, 1], holes 0."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    x = x * 2.0 - 1.0
    m = torch.from_numpy(np.ascontiguousarray(masks)).unsqueeze(1).float()
    return x * (1.0 - m)


def to_uint8(pred: torch.Tensor) -> np.ndarray:
    """(n, 3, h, w) in [-1, 1] -> (n, h, w, 3) uint8 by truncation, as the official code does."""
    pixels = ((pred.float() + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def composite(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """pred inside the hole, ground truth outside; all uint8, mask (…, h, w) in {0, 1}."""
    m = mask[..., None].astype(np.uint8)
    return pred * m + gt * (1 - m)


def _run_batch(
    model: WindowModel,
    batch: list[Window],
    frames: np.ndarray,
    masks: np.ndarray,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> list[np.ndarray]:
    """Local predictions (uint8) of windows that share one shape, run as a single batch."""
    x = torch.stack([masked_input(frames[w.frames], masks[w.frames]) for w in batch]).to(device)
    num_local, t = len(batch[0].neighbors), len(batch[0].frames)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with torch.no_grad(), autocast:
        pred = model(x, num_local)
    pred = pred.reshape(len(batch), t, *pred.shape[1:])[:, :num_local]
    return [to_uint8(p) for p in pred]


def _predictions(
    model: WindowModel,
    windows: list[Window],
    frames: np.ndarray,
    masks: np.ndarray,
    device: torch.device,
    window_batch: int,
    amp_dtype: torch.dtype | None,
) -> Iterator[np.ndarray]:
    """Each window's local predictions, in window order; same-shape windows share a batch."""
    for start in range(0, len(windows), window_batch):
        chunk = windows[start : start + window_batch]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, w in enumerate(chunk):
            groups.setdefault((len(w.neighbors), len(w.refs)), []).append(i)
        results: list[np.ndarray] = [np.empty(0)] * len(chunk)
        for members in groups.values():
            batch = [chunk[i] for i in members]
            preds = _run_batch(model, batch, frames, masks, device, amp_dtype)
            for i, pred in zip(members, preds, strict=True):
                results[i] = pred
        yield from results


def complete_video(
    model: WindowModel,
    frames: np.ndarray,
    masks: np.ndarray,
    *,
    neighbor_stride: int,
    ref_length: int,
    device: torch.device,
    window_batch: int = 1,
    amp_dtype: torch.dtype | None = None,
    on_window: Callable[[], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, float32 (h, w, 3) composite)`` in frame order as soon as each is final.

    Args:
        frames: (t, h, w, 3) uint8 ground truth (or input) frames.
        masks: (t, h, w) uint8 {0, 1} holes, already dilated.
        window_batch: windows per model call (same-shape windows only); 1 is the official loop.
        amp_dtype: autocast dtype (e.g. torch.bfloat16 on CUDA), None for float32.
        on_window: called after every window (progress bars).
    """
    length = len(frames)
    windows = window_schedule(length, neighbor_stride, ref_length)
    last_window = np.zeros(length, dtype=int)
    for k, w in enumerate(windows):
        last_window[list(w.neighbors)] = k
    done: dict[int, np.ndarray] = {}
    next_out = 0
    preds = _predictions(model, windows, frames, masks, device, window_batch, amp_dtype)
    for k, (window, local) in enumerate(zip(windows, preds, strict=True)):
        ids = list(window.neighbors)
        comps = composite(local, frames[ids], masks[ids])
        for idx, comp in zip(ids, comps, strict=True):
            old = done.get(idx)
            if old is None:
                done[idx] = comp
            else:  # float32, as the official averaging
                done[idx] = old.astype(np.float32) * 0.5 + comp.astype(np.float32) * 0.5
        if on_window is not None:
            on_window()
        while next_out < length and last_window[next_out] <= k:
            yield next_out, done.pop(next_out).astype(np.float32)
            next_out += 1
