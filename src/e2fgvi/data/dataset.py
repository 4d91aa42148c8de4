"""Training clips of YouTube-VOS (docs/official-e2fgvi.md §2.3): 5 local + 3 reference frames with moving masks.

Every random choice of sample ``i`` comes from ``numpy.random.default_rng([seed, i])``, and the
video order of each pass from ``default_rng([seed, pass])``; sample ``i`` is therefore the same
whichever worker, rank or resumed run draws it, which is what makes resume exact.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from e2fgvi.config import MaskParams, TrainParams
from e2fgvi.data.frames import VideoZip, load_index, resize_area, resize_frame
from e2fgvi.data.masks import random_mask_sequence
from e2fgvi.errors import UserError

_OPEN_ZIPS = 256  # per worker; the official code keeps all 3,471 open, beyond common fd limits


class TrainClips(Dataset):
    """Map-style dataset over *global sample indices* (not videos)."""

    def __init__(
        self, root: Path, index_file: Path, cfg: TrainParams, masks: MaskParams, seed: int
    ) -> None:
        self.root, self.cfg, self.masks, self.seed = root, cfg, masks, seed
        index = load_index(index_file)
        self.videos = sorted(index)
        self.lengths = [index[v] for v in self.videos]
        need = cfg.num_local_frames + cfg.num_ref_frames
        short = [v for v, n in zip(self.videos, self.lengths, strict=True) if n < need]
        if short:
            raise UserError(
                f"{index_file}: video {short[0]} has fewer than {need} frames "
                "(num_local_frames + num_ref_frames); lower them or drop the video"
            )
        self._zips: OrderedDict[str, VideoZip] = OrderedDict()
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        """Videos per pass (the sampler, not this length, bounds training)."""
        return len(self.videos)

    def video_of(self, index: int) -> int:
        """Which video sample ``index`` reads: pass ``index // n``, shuffled per pass."""
        n = len(self.videos)
        epoch, position = divmod(index, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._perm[1][position])

    def frame_ids(self, rng: np.random.Generator, length: int) -> list[int]:
        """Consecutive local frames from a random pivot, then sorted random references."""
        num_local, num_ref = self.cfg.num_local_frames, self.cfg.num_ref_frames
        pivot = int(rng.integers(0, length - num_local + 1))
        local = list(range(pivot, pivot + num_local))
        others = [i for i in range(length) if i < pivot or i >= pivot + num_local]
        refs = sorted(int(i) for i in rng.choice(others, size=num_ref, replace=False))
        return local + refs

    def _zip(self, video: str) -> VideoZip:
        handle = self._zips.pop(video, None) or VideoZip(self.root / f"{video}.zip")
        self._zips[video] = handle
        while len(self._zips) > _OPEN_ZIPS:
            self._zips.popitem(last=False)[1].close()
        return handle

    def _frames(self, video: str, ids: list[int]) -> np.ndarray:
        size = (self.cfg.width, self.cfg.height)
        # decode "reduced" / "reduced_area": libjpeg decodes sources >= 2x the clip size at 1/2
        # (1/4, 1/8) of their size first; not the official pixels (docs/speed.md states the
        # difference). "reduced_area" then resizes with OpenCV's area filter.
        at_least = None if self.cfg.decode == "exact" else size
        frames = self._zip(video).read_many(ids, at_least)
        # PIL bicubic like the official loader, or the area filter (no-ops on frames prepared at
        # this size).
        resize = resize_area if self.cfg.decode == "reduced_area" else resize_frame
        return np.stack([resize(f, size) for f in frames])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        v = self.video_of(index)
        video, length = self.videos[v], self.lengths[v]
        ids = self.frame_ids(rng, length)
        masks = random_mask_sequence(
            rng, length, self.cfg.height, self.cfg.width, self.masks, frames=ids
        )
        frames = self._frames(video, ids)
        if rng.random() < self.cfg.flip_prob:
            frames = frames[:, :, ::-1]  # the official flip: frames only, masks stay
        frames_t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        frames_t = frames_t.float().div_(127.5).sub_(1.0)  # (t, 3, h, w) in [-1, 1]
        masks_t = torch.from_numpy(masks).unsqueeze(1).float()  # (t, 1, h, w)
        return frames_t, masks_t


class StepSampler(Sampler[int]):
    """Global sample indices for one rank, from ``start_step`` to ``total_steps``.

    Step ``s`` uses samples ``s*B .. s*B + B-1`` of the global batch ``B``; rank ``r`` takes its
    contiguous share, as a DistributedSampler would.
    """

    def __init__(self, start_step: int, total_steps: int, global_batch: int, rank: int, world: int):
        self.start, self.total = start_step, total_steps
        self.global_batch, self.per_rank, self.rank = global_batch, global_batch // world, rank

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.total):
            base = step * self.global_batch + self.rank * self.per_rank
            yield from range(base, base + self.per_rank)

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.per_rank
