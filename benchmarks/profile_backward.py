"""Op-level CPU profile of the generator forward and backward: ours next to the official one.

    PYTHONPATH=src python benchmarks/profile_backward.py --official /path/to/E2FGVI
    PYTHONPATH=src python benchmarks/profile_backward.py --official ../E2FGVI --config hq --top 30

Same weights, same clip, fp32, batch 1, fresh processes per side run interleaved ``--repeats``
times (each profiled after one warm-up forward + backward); per op the smallest self time over
the repeats is kept, since on a shared machine the same op on the same shapes varies by 1.5x
between processes. The loss is L1(prediction, clip) + L1(flows), so the backward runs through
the generator only. Tables: self CPU time per op name (what each op itself costs, children
excluded), the largest first, both sides in one table; each side's top ops with shapes; and
the backward graph's nodes (the gradient of which forward op) by total time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from interleave import interleaved, load_avg, machine, print_table, run_worker
from vs_official import CONFIGS, SIDES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="E2FGVI checkout")
    parser.add_argument("--config", choices=list(CONFIGS), default="e2fgvi")
    parser.add_argument("--top", type=int, default=25, help="ops per table")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved processes per side")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per process (0: default; 1 on a loaded shared machine)",
    )
    parser.add_argument("--json", type=Path, help="also write the full op tables here")
    return parser.parse_args()


def side_by_side(results: dict[str, dict], phase: str, top: int) -> list[list[str]]:
    by_name = {side: {r["name"]: r for r in results[side][phase]} for side in SIDES}
    names = sorted(
        set(by_name["ours"]) | set(by_name["official"]),
        key=lambda n: -max(by_name[s].get(n, {}).get("self_ms", 0) for s in SIDES),
    )
    rows = []
    for name in names[:top]:
        cells = []
        for side in SIDES:
            r = by_name[side].get(name)
            cells += [f"{r['self_ms']:.0f}", str(r["count"])] if r else ["-", "-"]
        rows.append([name, *cells])
    return rows


def fastest(runs: list[dict]) -> dict:
    """Per table and op (and shapes), the smallest self time over the runs; walls likewise."""
    out = {k: min(r[k] for r in runs) for k in ("forward_s", "backward_s")}
    for table in ("forward", "backward", "forward_shapes", "backward_shapes", "backward_nodes"):
        best: dict[tuple[str, str], dict] = {}
        for run in runs:
            for row in run[table]:
                key = (row["name"], row["shapes"])
                if key not in best or row["self_ms"] < best[key]["self_ms"]:
                    best[key] = row
        out[table] = sorted(best.values(), key=lambda r: -r["self_ms"])
    return out


def main() -> None:
    args = parse_args()
    config = {**CONFIGS[args.config], "device": "cpu", "official": str(args.official.resolve())}
    if args.threads:
        config["threads"] = args.threads
    print(f"machine: {machine()}; load average at start: {load_avg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "weights.pt")
        run_worker({**config, "side": "ours", "task": "setup", "weights": weights})
        specs = {
            side: {**config, "side": side, "task": "profile", "weights": weights} for side in SIDES
        }
        runs = interleaved(specs, args.repeats, print)
    results = {side: fastest(runs[side]) for side in SIDES}
    c = CONFIGS[args.config]
    print(
        f"{c['variant']} {c['width']}x{c['height']} {c['num_local']}+{c['num_ref']}, fp32, "
        f"batch 1; load average at end: {load_avg()[0]:.2f}"
    )
    for phase in ("forward", "backward"):
        walls = ", ".join(f"{s} {results[s][f'{phase}_s']:.1f} s" for s in SIDES)
        print(f"\n{phase} under the profiler (fastest wall, profiler overhead included): {walls}")
        header = ["op", "ours self ms", "ours calls", "official self ms", "official calls"]
        print_table(header, side_by_side(results, phase, args.top))
        for side in SIDES:
            print(f"\n{side} {phase}: top ops by self CPU time, grouped by input shapes")
            rows = [
                [r["name"], f"{r['self_ms']:.0f}", str(r["count"]), r["shapes"][:90]]
                for r in results[side][f"{phase}_shapes"][: args.top // 2]
            ]
            print_table(["op", "self ms", "calls", "input shapes"], rows)
    print("\nbackward graph nodes by total CPU time (children included; 'self ms' = total here)")
    print_table(
        ["node", "ours ms", "ours calls", "official ms", "official calls"],
        side_by_side(results, "backward_nodes", args.top),
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
