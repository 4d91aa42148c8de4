"""One measurement in a fresh process, for ``vs_official.py`` and ``speed_switches.py``.

    python benchmarks/vs_worker.py SPEC.json OUT.json

SPEC names the side (``ours`` | ``official``), the task (``setup``, ``check``, ``step``,
``forward``, ``loader``, ``masks``) and its settings; the result is written to OUT as JSON
(tensors, where a task returns some, go to ``OUT.pt``). The official side imports only the
official checkout (and the mmcv stand-in); the our side only ``ours_api``.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from phase_clock import MemoryProbe, PhaseClock, synchronizer
from PIL import Image


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _setup_of(spec: dict[str, Any]):
    import ours_api

    keys = ("variant", "width", "height", "num_local", "num_ref", "device")
    switches = {k: v for k, v in spec.get("switches", {}).items() if k != "adam"}
    return ours_api.Setup(**{k: spec[k] for k in keys}, **switches)


def _trainer(spec: dict[str, Any]):
    """Either side's trainer with the shared weights loaded (strictly)."""
    if spec["side"] == "official":
        import official_api

        official_api.load(Path(spec["official"]))
        trainer = official_api.build_trainer(spec["variant"], spec["num_local"], spec["device"])
    else:
        import ours_api

        trainer = ours_api.build_trainer(_setup_of(spec))
        adam = spec.get("switches", {}).get("adam", "default")
        if adam != "default":
            trainer.replace_adam(**{adam: True})
    state = torch.load(spec["weights"], weights_only=True, map_location=spec["device"])
    trainer.load(state["nets"])
    device = spec["device"]
    inputs = (state["frames"].to(device), state["masks"].to(device))
    del state
    gc.collect()
    return trainer, inputs


def task_setup(spec: dict[str, Any]) -> dict[str, Any]:
    """Seeded initial weights of our nets plus one real clip and its masks, for both sides."""
    import cv2
    import ours_api

    setup = _setup_of(spec)
    trainer = ours_api.build_trainer(setup)
    capture = cv2.VideoCapture(str(ours_api.sample_clip()))
    frames = []
    while len(frames) < 132:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr)
    capture.release()
    ids = [40, 41, 42, 43, 44][: setup.num_local] + [10, 80, 120][: setup.num_ref]
    size = (setup.width, setup.height)
    clip = [
        np.asarray(Image.fromarray(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)).resize(size, 3))
        for i in ids
    ]
    frames_t = torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).float() / 127.5 - 1
    masks = ours_api.mask_video(np.random.default_rng(7), len(frames), setup)[ids]
    masks_t = torch.from_numpy(masks).unsqueeze(1).float()
    state = {"nets": trainer.state(), "frames": frames_t[None], "masks": masks_t[None]}
    torch.save(state, spec["weights"])
    return {"hole_share": float(masks_t.mean())}


def task_check(spec: dict[str, Any]) -> dict[str, Any]:
    """Generator outputs on the shared clip (saved beside OUT) and one iteration's losses."""
    trainer, (frames, masks) = _trainer(spec)
    with torch.no_grad():
        pred, flows = trainer.forward(frames * (1 - masks))
    torch.save({"pred": pred, "flow_f": flows[0], "flow_b": flows[1]}, spec["tensors"])
    return {"losses": trainer.step(frames, masks)}


def task_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm-up iterations, then timed ones with their phases; peak memory over all of them."""
    trainer, (frames, masks) = _trainer(spec)
    clock = PhaseClock(spec["device"])
    clock.attach(
        trainer.generator, trainer.discriminator, trainer.gen_optimizer, trainer.dis_optimizer
    )
    memory = MemoryProbe(spec["device"])
    memory.reset()
    losses, phases = [], []
    for _ in range(spec["warmup"] + spec["iters"]):
        record: dict[str, Any] = {}
        phases.append(clock.run(lambda r=record: r.update(trainer.step(frames, masks))))
        losses.append(record)
    warmup = [p["total"] for p in phases[: spec["warmup"]]]
    return {
        "phases": phases[spec["warmup"] :],
        "warmup_s": warmup,
        "losses": losses,
        "peak_mib": memory.peak_delta_mib(),
    }


def task_forward(spec: dict[str, Any]) -> dict[str, Any]:
    """Generator forward under no_grad (inference), warm-up then timed; peak memory."""
    trainer, (frames, masks) = _trainer(spec)
    sync = synchronizer(spec["device"])
    masked = frames * (1 - masks)
    memory = MemoryProbe(spec["device"])
    memory.reset()
    times = []
    with torch.no_grad():
        for i in range(spec["warmup"] + spec["iters"]):
            sync()
            start = time.perf_counter()
            trainer.forward(masked)
            sync()
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - start)
    return {"times": times, "peak_mib": memory.peak_delta_mib()}


def task_loader(spec: dict[str, Any]) -> dict[str, Any]:
    """Clips per second of one worker: ``dataset[i]`` in a loop (what a DataLoader worker does)."""
    root = Path(spec["data_root"])
    if spec["side"] == "official":
        import official_api

        official_api.load(Path(spec["official"]))
        dataset = official_api.train_dataset(
            root.parent,
            root.name,
            spec["width"],
            spec["height"],
            spec["num_local"],
            spec["num_ref"],
        )
    else:
        import ours_api

        dataset = ours_api.train_dataset(root / "JPEGImages", root / "train.json", _setup_of(spec))
    n = len(dataset)
    for i in range(spec["warmup"]):
        dataset[i % n]  # opens the zips, as a worker's first clips do
    start = time.perf_counter()
    for i in range(spec["iters"]):
        dataset[(spec["warmup"] + i) % n]
    return {"clips_per_s": spec["iters"] / (time.perf_counter() - start)}


def task_masks(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds per training mask video of ``length`` frames at the clip size."""
    if spec["side"] == "official":
        import official_api

        official_api.load(Path(spec["official"]))

        def make(i: int) -> object:
            return official_api.mask_video(spec["length"], spec["width"], spec["height"])
    else:
        import ours_api

        setup = _setup_of(spec)

        def make(i: int) -> object:
            return ours_api.mask_video(np.random.default_rng(i), spec["length"], setup)

    make(10**6)  # warm-up (imports, first allocation)
    start = time.perf_counter()
    for i in range(spec["iters"]):
        make(i)
    return {"s_per_video": (time.perf_counter() - start) / spec["iters"]}


def _op_table(prof: Any, by_shape: bool) -> list[dict[str, Any]]:
    rows = []
    for e in prof.key_averages(group_by_input_shape=by_shape):
        rows.append(
            {
                "name": e.key,
                "shapes": str(e.input_shapes) if by_shape else "",
                "self_ms": e.self_cpu_time_total / 1e3,
                "total_ms": e.cpu_time_total / 1e3,
                "count": e.count,
            }
        )
    rows.sort(key=lambda r: -r["self_ms"])
    return rows[:60]


def task_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """torch.profiler op tables (self CPU time) of the generator forward and of its backward.

    The loss is L1 of the prediction to the clip plus L1 of the flows, so the backward covers
    the whole generator and nothing else (no discriminator).
    """
    from torch.profiler import ProfilerActivity, profile

    trainer, (frames, masks) = _trainer(spec)
    masked = frames * (1 - masks)

    def loss_of() -> torch.Tensor:
        pred, flows = trainer.forward(masked)
        target = frames.reshape(-1, *frames.shape[2:])
        return (pred - target).abs().mean() + flows[0].abs().mean() + flows[1].abs().mean()

    loss_of().backward()  # warm-up
    trainer.generator.zero_grad(set_to_none=True)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loss = loss_of()
    out["forward_s"] = time.perf_counter() - start
    out["forward"], out["forward_shapes"] = _op_table(prof, False), _op_table(prof, True)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    out["backward_s"] = time.perf_counter() - start
    out["backward"], out["backward_shapes"] = _op_table(prof, False), _op_table(prof, True)
    out["backward_nodes"] = _node_table(prof)
    return out


def _node_table(prof: Any) -> list[dict[str, Any]]:
    """Backward graph nodes (which forward op's gradient) by total CPU time, children included."""
    prefix = "autograd::engine::evaluate_function: "
    rows = [
        {
            "name": e.key.removeprefix(prefix),
            "shapes": "",
            "self_ms": e.cpu_time_total / 1e3,
            "total_ms": e.cpu_time_total / 1e3,
            "count": e.count,
        }
        for e in prof.key_averages()
        if e.key.startswith(prefix)
    ]
    rows.sort(key=lambda r: -r["self_ms"])
    return rows[:60]


TASKS = {
    "profile": task_profile,
    "setup": task_setup,
    "check": task_check,
    "step": task_step,
    "forward": task_forward,
    "loader": task_loader,
    "masks": task_masks,
}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    _seed_everything(spec.get("seed", 0))
    if "threads" in spec:
        torch.set_num_threads(spec["threads"])
    result = TASKS[spec["task"]](spec)
    result["torch_threads"] = torch.get_num_threads()
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
