"""The verdicts of benchmarks/gpu_check.sh: PASS, FAIL or SKIP per check against stated bounds.

Reads what the parts wrote into the output folder (a recorded folder works as well) and prints
one line per check with its figure and bound; exits 1 when any check fails. A part that was
skipped on purpose is listed in ``skipped.txt`` (``name: why``); a missing output of a part
that was not skipped is a FAIL, never a pass.

    PYTHONPATH=src python benchmarks/gpu_check_judge.py OUT_DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

# The bounds each check is judged by (stated here; docs/cost.md "GPU check" quotes them).
BOUNDS = {
    "energy_pct": 5.0,  # |NVML energy counter / integral of sampled power - 1|, percent
    "power_over_limit_pct": 2.0,  # max sampled power may exceed the board limit by this much
    "bf16_loss_rel": 0.05,  # |bf16 - fp32| / |fp32| of the generator loss, every step
    "psnr_db": 0.1,  # |mean frame PSNR on the GPU - on the CPU|, dB
    "ddp_rel": 1e-3,  # relative difference of losses and weight checksum, DDP vs one process
}


class MissingError(Exception):
    """A part's output is not there."""


def _load(folder: Path, name: str):
    path = folder / name
    if not path.is_file():
        raise MissingError(name)
    return json.loads(path.read_text(encoding="utf-8"))


def check_energy(folder: Path) -> tuple[bool, str]:
    energy = _load(folder, "energy.json")
    counter, integral = energy["counter_j"], energy["integral_j"]
    if counter is None or not integral:
        return False, f"no counter or no power integral (counter {counter}, integral {integral})"
    off = abs(counter / integral - 1) * 100
    bound = BOUNDS["energy_pct"]
    detail = f"counter {counter:.1f} J vs power integral {integral:.1f} J: {off:.2f} %"
    return off <= bound, f"{detail} (bound {bound} %)"


def check_power(folder: Path) -> tuple[bool, str]:
    energy, gpu = _load(folder, "energy.json"), _load(folder, "gpu.json")
    peak, limit = energy["max_power_w"], gpu["power_limit_w"]
    if peak is None or limit is None:
        return False, f"max power {peak} W, limit {limit} W: not both measured"
    bound = limit * (1 + BOUNDS["power_over_limit_pct"] / 100)
    return (
        peak <= bound,
        f"max sampled {peak:.1f} W, board limit {limit:.1f} W (bound {bound:.1f} W)",
    )


def check_memory(folder: Path) -> tuple[bool, str]:
    report, gpu = _load(folder, "profile/report.json"), _load(folder, "gpu.json")
    total = gpu["memory_total_gib"]
    problems, shown = [], []
    for m in report["measurements"]:
        probed = sorted(
            (p["clips"], p["peak_reserved_gb"]) for p in m["memory"]["probed"] if p["fits"]
        )
        peaks = [gb for _, gb in probed]
        shown.append(
            f"{m['step']['precision']}: " + ", ".join(f"{c}->{gb:.2f}" for c, gb in probed)
        )
        if not probed:
            problems.append(f"{m['step']['precision']}: nothing fitted")
        if any(b < a for a, b in itertools.pairwise(peaks)):
            problems.append(f"{m['step']['precision']}: peak not monotonic in clips")
        if peaks and max(peaks) > total:
            problems.append(
                f"{m['step']['precision']}: peak {max(peaks):.2f} GiB > card {total:.2f} GiB"
            )
    detail = f"clips->peak GiB {'; '.join(shown)} (card {total:.2f} GiB)"
    return not problems, "; ".join([*problems, detail])


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def check_bf16(folder: Path) -> tuple[bool, str]:
    found = _load(folder, "losses.json")
    pairs = list(zip(found["bf16"], found["fp32"], strict=True))
    worst = max(_rel(a, b) for a, b in pairs)
    bound = BOUNDS["bf16_loss_rel"]
    return worst <= bound, f"{len(pairs)} steps, worst |bf16-fp32|/fp32 {worst:.3g} (bound {bound})"


def check_psnr(folder: Path) -> tuple[bool, str]:
    found = _load(folder, "psnr.json")
    gap = abs(found.get("cuda", found["cpu"]) - found["cpu"])
    bound = BOUNDS["psnr_db"]
    where = "cuda" if "cuda" in found else "cpu (dry run)"
    return gap <= bound, f"{where} vs cpu: {gap:.4f} dB (bound {bound} dB)"


def check_ddp(folder: Path) -> tuple[bool, str]:
    ddp, one = _load(folder, "ddp.json"), _load(folder, "single.json")
    worst = max(
        [_rel(a, b) for a, b in zip(ddp["losses"], one["losses"], strict=True)]
        + [_rel(ddp["checksum"], one["checksum"])]
    )
    bound = BOUNDS["ddp_rel"]
    return worst <= bound, (
        f"{ddp['ranks']} ranks vs 1 process, same global batch: worst relative difference "
        f"{worst:.3g} over {len(ddp['losses'])} losses and the weight checksum (bound {bound})"
    )


def _forecast_vs_measured(folder: Path, name: str) -> tuple[bool, str]:
    rows, measured = _load(folder, name), _load(folder, "profile/profile.json")
    step = measured["step_time_median_s"]
    row = rows[0]
    low, high = row["step_s_band"]
    error = (row["step_s"] - step) / step * 100
    inside = low <= step <= high
    return inside, (
        f"{row['target']}: forecast {row['step_s']:.4g} s ({low:.4g}-{high:.4g}) vs measured "
        f"{step:.4g} s: error {error:+.1f} %, {'inside' if inside else 'outside'} the band; "
        f"{row['basis']}"
    )


CHECKS = {
    "energy counter": ("energy", check_energy),
    "power limit": ("energy", check_power),
    "memory probe": ("profile", check_memory),
    "bf16 losses": ("losses", check_bf16),
    "eval psnr": ("psnr", check_psnr),
    "ddp = single": ("ddp", check_ddp),
    "forecast roofline": ("forecast", lambda f: _forecast_vs_measured(f, "forecast_roofline.json")),
    "forecast calibrated": (
        "forecast calibrated",
        lambda f: _forecast_vs_measured(f, "forecast_calibrated.json"),
    ),
}


def skipped(folder: Path) -> dict[str, str]:
    path = folder / "skipped.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def judge(folder: Path) -> list[tuple[str, str, str]]:
    """(check, PASS | FAIL | SKIP, detail) for every check."""
    skips = skipped(folder)
    verdicts = []
    for name, (part, check) in CHECKS.items():
        if part in skips:
            verdicts.append((name, "SKIP", f"part '{part}' skipped: {skips[part]}"))
            continue
        try:
            ok, detail = check(folder)
        except MissingError as exc:
            ok, detail = False, f"no output {exc} (the part '{part}' failed or did not run)"
        except (KeyError, TypeError, ValueError) as exc:
            ok, detail = False, f"unreadable output: {type(exc).__name__} {exc}"
        verdicts.append((name, "PASS" if ok else "FAIL", detail))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    verdicts = judge(args.folder)
    for name, verdict, detail in verdicts:
        print(f"{verdict:4s}  {name:20s} {detail}")
    failed = [name for name, verdict, _ in verdicts if verdict == "FAIL"]
    print(f"verdict: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
