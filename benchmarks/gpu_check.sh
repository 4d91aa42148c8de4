#!/usr/bin/env bash
# One prepared check of everything this bundle does on an NVIDIA GPU: prints every figure,
# then judges them (benchmarks/gpu_check_judge.py): PASS/FAIL per check against stated bounds.
#   1. doctor        `e2fgvi doctor` (torch/CUDA/NVML/DVC/MLflow)
#   2. profile       the official plan at fp32 and bf16, a few steps each, with memory probing
#                    (the report: plan beside measured, forecast, budget table, windows)
#   3. gpu tests     the gpu-marked tests (bf16 evaluation path vs fp32, memory probe)
#   4. evaluation    frames/s of the evaluation protocol, fp32 and batched bf16 windows
#   5. energy        NVML energy (counter and power integral) against wall time
#   6. ddp           a 2-rank DDP training step (NCCL), only with 2 or more GPUs, and the same
#                    steps in one process
#   6b. losses       the plan's step at fp32 and bf16 from the same weights: losses per step
#   6c. psnr         the evaluation protocol on the GPU and on the CPU: PSNR of each
#   6d. forecast     `e2fgvi forecast` for this GPU's kind: roofline, and calibrated from a
#                    profile of another kind when mlruns/ holds one; against the measured step
#   7. switches      our step under fp32, bf16, fp16, TF32 and sampled+bf16 at the official
#                    configuration (`benchmarks/speed_switches.py --device cuda`); GPU only
#   8. vs official   `benchmarks/vs_official.py --official PATH --device cuda`, only with
#                    --official PATH (the official E2FGVI checkout to compare against)
# Each part has a time limit; parts 1-5 take under 8 minutes together on one GPU (estimated:
# not yet measured on a GPU), part 7 up to 5 more. The verdicts close the output:
#   energy counter within 5 % of the power integral; max power within 2 % of the board limit;
#   memory probe monotonic in clips and below the card's memory; bf16 generator losses within
#   5 % of fp32; evaluation PSNR on GPU within 0.1 dB of the CPU's; DDP losses and weights within
#   1e-3 of one process at the same global batch; each forecast's band holds the measured step.
#
#   benchmarks/gpu_check.sh [--out DIR] [--plan FILE] [--official PATH]
#   benchmarks/gpu_check.sh --dry-run    # no GPU needed: every part on the CPU, shrunk
#
# Without a GPU (and without --dry-run) it says so in one line and exits 2.
set -u -o pipefail

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; }

DRY=0 OUT="" PLAN="params.official.yaml" OFFICIAL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT="$2"; shift ;;
        --plan) PLAN="$2"; shift ;;
        --official) OFFICIAL="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" DVC_NO_ANALYTICS=1
OUT="${OUT:-$(mktemp -d -t gpu-check.XXXXXX)}"
mkdir -p "$OUT"

GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)"
if [ "$GPUS" = "0" ] && [ "$DRY" = "0" ]; then
    SMI="not found"
    command -v nvidia-smi >/dev/null && SMI="$(nvidia-smi -L 2>&1 | head -n 1)"
    echo "gpu_check: no NVIDIA GPU visible to torch (nvidia-smi: $SMI); nothing to" \
         "check. Run it on a GPU machine, or with --dry-run to exercise it on the CPU." >&2
    exit 2
fi
DEVICE=cuda SCALE=1
[ "$DRY" = "1" ] && DEVICE=cpu SCALE=5  # a shared CPU is slow: the limits are for the GPU run

START=$(date +%s)
SUMMARY=()
part() {  # part NAME LIMIT_S COMMAND...: run with a time limit, print its duration and status
    local name="$1" limit="$2"; shift 2
    local t0 rc took
    t0=$(date +%s%N)
    echo
    limit=$(( limit * SCALE ))
    echo "=== $name (limit ${limit} s) ==="
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    took=$(( ($(date +%s%N) - t0) / 100000000 ))
    took="$(( took / 10 )).$(( took % 10 ))"
    [ $rc = 124 ] && echo "=== $name: TIMED OUT after ${limit} s ===" || echo "=== $name: exit $rc, ${took} s ==="
    SUMMARY+=("$(printf '%-12s exit %-3s %7s s' "$name" "$rc" "$took")")
}
skip() {  # skip NAME WHY: said in the output and in skipped.txt, which the judge reads
    echo; echo "=== $1: skipped ($2) ==="; SUMMARY+=("$(printf '%-12s skipped: %s' "$1" "$2")")
    echo "$1: $2" >> "$OUT/skipped.txt"
}
: > "$OUT/skipped.txt"

# The profile's window and plan: the official plan on a GPU; shrunk on the CPU (--dry-run).
"$PY" - "$OUT" "$PLAN" "$DRY" <<'EOF' || exit 2
import sys
from pathlib import Path

import yaml

out, plan, dry = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
params = yaml.safe_load(Path("params.yaml").read_text())
window = {"profile_warmup": 1, "profile_steps": 2} if dry else {"profile_warmup": 2, "profile_steps": 5}
params["cost"]["forecast"].update(window, probe_max_clips=8)
(out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
if dry:  # the sample's network, 2+1 frames, on 2 devices: seconds a step on a CPU
    params["train"].update(num_local_frames=2, num_ref_frames=1, batch_size=2, nproc_per_node=2,
                           iterations=1000)
    (out / "plan.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
else:
    (out / "plan.yaml").write_text(Path(plan).read_text())
EOF

echo "gpu_check: $([ "$DRY" = 1 ] && echo "DRY RUN on the CPU" || echo "$GPUS GPU(s)"), plan" \
     "$([ "$DRY" = 1 ] && echo "shrunk from params.yaml" || echo "$PLAN"), output in $OUT"
[ "$DRY" = 0 ] && nvidia-smi --query-gpu=index,name,memory.total,power.limit,driver_version --format=csv
# The card's name, memory and board limit for the judge (from torch and NVML).
"$PY" - "$OUT/gpu.json" "$DEVICE" <<'EOF' || exit 2
import json, sys
import torch
out, device = sys.argv[1], sys.argv[2]
info = {"name": "cpu", "memory_total_gib": None, "power_limit_w": None}
if device == "cuda":
    import pynvml
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    info = {"name": torch.cuda.get_device_name(0),
            "memory_total_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000}
open(out, "w").write(json.dumps(info))
EOF

part doctor 45 "$PY" -m e2fgvi.cli doctor
part profile 210 "$PY" -m e2fgvi.cli profile --params "$OUT/params.yaml" --plan "$OUT/plan.yaml" \
    --precision bf16 --device "$DEVICE" --out "$OUT/profile" --no-track
[ -f "$OUT/profile/profile.md" ] && cat "$OUT/profile/profile.md"
if [ "$DRY" = 0 ]; then
    part "gpu tests" 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
    part evaluation 60 "$PY" benchmarks/evaluate.py --frames 12 --device cuda
else
    skip "gpu tests" "they need a GPU"
    part evaluation 60 "$PY" benchmarks/evaluate.py --frames 6 --device cpu
fi
part energy 40 "$PY" benchmarks/gpu_check.py energy --seconds "$([ "$DRY" = 1 ] && echo 3 || echo 20)" \
    --device "$DEVICE" --json "$OUT/energy.json"
if [ "$GPUS" -ge 2 ] || [ "$DRY" = 1 ]; then
    part ddp 90 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
        benchmarks/gpu_check.py ddp --plan "$OUT/plan.yaml" --steps 3 --device "$DEVICE" \
        --json "$OUT/ddp.json"
    part single 60 "$PY" benchmarks/gpu_check.py single --plan "$OUT/plan.yaml" --steps 3 \
        --device "$DEVICE" --json "$OUT/single.json"
else
    skip ddp "needs 2 GPUs, $GPUS visible"
fi
if [ "$DRY" = 1 ]; then  # what the CPU cannot show: said to the judge, which skips it
    echo "energy: no NVML on the CPU (dry run)" >> "$OUT/skipped.txt"
    echo "profile: memory probing is GPU-only (dry run)" >> "$OUT/skipped.txt"
fi
part losses 90 "$PY" benchmarks/gpu_check.py losses --plan "$OUT/plan.yaml" --steps 3 \
    --device "$DEVICE" --json "$OUT/losses.json"
part psnr 120 "$PY" benchmarks/gpu_check.py psnr --frames "$([ "$DRY" = 1 ] && echo 6 || echo 12)" \
    --device "$DEVICE" --json "$OUT/psnr.json"
KIND="$("$PY" -c 'import json, sys; from e2fgvi.cost.device_table import shipped_table
print(shipped_table().lookup(json.load(open(sys.argv[1]))["name"]) or "")' "$OUT/gpu.json")"
PLAN_DEVICES="$("$PY" -c 'import sys; from e2fgvi.cost.plan import load_plan
print(load_plan(sys.argv[1])[1].schedule.devices)' "$OUT/plan.yaml")"
if [ -z "$KIND" ]; then
    skip forecast "this device is not in e2fgvi/cost/devices.yaml"
    skip "forecast calibrated" "this device is not in e2fgvi/cost/devices.yaml"
else  # at the plan's device count, whose clips per device are the profile's measured step
    part forecast 120 sh -c '"$0" -m e2fgvi.cli forecast --plan "$1" --params "$2" --target "$3" \
        --devices "$4" --no-calibrate --json > "$5"' "$PY" "$OUT/plan.yaml" "$OUT/params.yaml" \
        "$KIND" "$PLAN_DEVICES" "$OUT/forecast_roofline.json"
    part "forecast calibrated" 120 sh -c '"$0" -m e2fgvi.cli forecast --plan "$1" --params "$2" \
        --target "$3" --devices "$4" --mlruns mlruns --not-from "$3" --json > "$5"' "$PY" \
        "$OUT/plan.yaml" "$OUT/params.yaml" "$KIND" "$PLAN_DEVICES" "$OUT/forecast_calibrated.json"
    grep -q '"basis": "calibrated' "$OUT/forecast_calibrated.json" 2>/dev/null || {
        rm -f "$OUT/forecast_calibrated.json"
        skip "forecast calibrated" "no profile of another kind with operator times in mlruns/"
    }
fi
if [ "$DRY" = 1 ]; then
    skip switches "CUDA only; the CPU's figures are in docs/speed.md"
else
    part switches 300 "$PY" benchmarks/speed_switches.py --device cuda --config e2fgvi \
        --switches fp32 bf16 fp16 tf32 sampled+bf16
fi
# The comparison with the official implementation (a checkout the user supplies).
if [ -z "$OFFICIAL" ]; then
    skip "vs official" "no --official PATH given"
elif [ ! -f benchmarks/vs_official.py ]; then
    skip "vs official" "benchmarks/vs_official.py is not in this checkout"
else
    part "vs official" 180 "$PY" benchmarks/vs_official.py --official "$OFFICIAL" --device "$DEVICE"
fi

echo
echo "=== summary: $(( $(date +%s) - START )) s in total ==="
printf '%s\n' "${SUMMARY[@]}"
echo
echo "=== verdicts ==="
"$PY" benchmarks/gpu_check_judge.py "$OUT"
JUDGED=$?
! printf '%s\n' "${SUMMARY[@]}" | grep -Eq 'exit [1-9]' && [ "$JUDGED" = 0 ]
