"""Fresh-process measurements, interleaved (A B A B ...), with the conditions they ran under."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
WORKER = HERE / "vs_worker.py"
REPO = HERE.parent


def run_worker(spec: dict[str, Any], timeout_s: float = 3600) -> dict[str, Any]:
    """Run one ``vs_worker.py`` task in a new interpreter; its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(spec))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
        proc = subprocess.run(
            [sys.executable, str(WORKER), str(spec_file), str(out_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if proc.returncode != 0 or not out_file.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise RuntimeError(
                f"worker {spec['side']}/{spec['task']} failed (rc {proc.returncode}):\n"
                + "\n".join(tail)
            )
        return json.loads(out_file.read_text())


def interleaved(
    specs: dict[str, dict[str, Any]],
    repeats: int,
    progress: Callable[[str], None] = lambda _: None,
    keep_going: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` rounds, each running every spec once in the given order (A B A B ...).

    With ``keep_going`` a failed run is recorded as ``{"error": last line}`` and the others go on.
    """
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in specs}
    for r in range(repeats):
        for label, spec in specs.items():
            start = time.perf_counter()
            try:
                results[label].append(run_worker(spec))
            except RuntimeError as exc:
                if not keep_going:
                    raise
                results[label].append({"error": str(exc).strip().splitlines()[-1]})
            progress(
                f"  {spec['task']:8s} {label:28s} repeat {r + 1}/{repeats}: "
                f"{time.perf_counter() - start:6.1f} s wall, load {load_avg()[0]:.2f}"
            )
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def load_avg() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, Any]:
    """CPU, threads and library versions: the conditions printed beside every table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A GitHub-flavoured Markdown table (pastes into docs unchanged)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
