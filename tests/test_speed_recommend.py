"""Which speed switches apply here, what profile recommends, and bf16 on CPUs without it.

The recommendation runs on fake step makers and a fake clock (any timing, no noise) and once on
real training steps of the sample model with one switch deliberately slowed; the bf16 checks on
faked CPU flags and instruction-set caps (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pytest
import torch

from e2fgvi.config import SwitchParams
from e2fgvi.cost import switches
from e2fgvi.cpufeatures import Bf16Support, cpu_bf16, cpu_flags, cpu_model, slow_bf16
from e2fgvi.doctor.checks import check_cpu_bf16
from e2fgvi.doctor.probes import GpuInfo, TorchFacts
from e2fgvi.errors import UserError
from e2fgvi.train import precision
from e2fgvi.train.profiling import make_training_step

CPU = torch.device("cpu")
NATIVE = Bf16Support(True, "native bf16 (avx512_bf16)")
EMULATED = Bf16Support(False, "this CPU has no bf16 instructions (avx512_bf16/amx_bf16)")
ZEN4 = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
ZEN2 = {"avx", "avx2", "fma", "sha_ni"}
CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx avx2 sha_ni\n"


def _with(params, section: str, **changes):
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


# --------------------------------------------------------------------------- CPU bf16 facts


def test_cpu_flags_and_model_come_from_cpuinfo():
    assert cpu_flags(CPUINFO) == {"fpu", "avx", "avx2", "sha_ni"}
    assert cpu_model(CPUINFO) == "AMD EPYC 7B12"
    assert cpu_flags("processor: 0\n") == set() and cpu_model("") == "unknown CPU"


@pytest.mark.parametrize(
    "flags, env, native, says",
    [
        (ZEN4, {}, True, "avx512_bf16"),
        ({"avx512f", "amx_bf16"}, {}, True, "amx_bf16"),
        (ZEN2, {}, False, "no bf16 instructions"),
        (set(), {}, False, "unreadable"),
        (ZEN4, {"ATEN_CPU_CAPABILITY": "avx2"}, False, "ATEN_CPU_CAPABILITY=avx2"),
        (ZEN4, {"ATEN_CPU_CAPABILITY": "default"}, False, "ATEN_CPU_CAPABILITY=default"),
        (ZEN4, {"ATEN_CPU_CAPABILITY": "avx512"}, True, "native"),
        (ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False, "ONEDNN_MAX_CPU_ISA=AVX2"),
        (ZEN4, {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, True, "native"),
    ],
)
def test_native_bf16_needs_the_flags_and_no_cap_below_them(flags, env, native, says):
    support = cpu_bf16(flags, env)
    assert support.native is native and says in support.detail


def test_slow_bf16_warns_only_for_bf16_on_a_cpu_without_it():
    assert "will be slow" in slow_bf16("bf16", "cpu", EMULATED)
    assert slow_bf16("bf16", "cpu", NATIVE) == ""
    assert slow_bf16("fp32", "cpu", EMULATED) == ""
    assert slow_bf16("bf16", "cuda", EMULATED) == ""


def test_training_with_bf16_on_a_cpu_without_it_logs_a_warning(params, monkeypatch, caplog):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # read by cpu_bf16, not by torch here
    with caplog.at_level(logging.WARNING, logger="e2fgvi.train.precision"):
        precision.apply_backend_switches(params.train.model_copy(update={"amp": "bf16"}), CPU)
    assert "bf16 autocast on this CPU will be slow" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="e2fgvi.train.precision"):
        precision.apply_backend_switches(params.train, CPU)  # fp32: nothing to say
    assert caplog.text == ""


# --------------------------------------------------------------------------- doctor


def _no_gpu() -> TorchFacts:
    return TorchFacts("2.14.1+cu130", "13.0", "9.24.0", [], [], "none")


def test_doctor_warns_about_bf16_on_a_cpu_without_it(params):
    bf16 = _with(params, "train", amp="bf16")
    check = check_cpu_bf16(bf16, _no_gpu(), "AMD EPYC 7B12", EMULATED)
    assert check.status == "warn" and "train.amp" in check.detail and "fp32" in check.hint
    both = _with(bf16, "eval", amp="bf16")
    assert "train.amp and eval.amp" in check_cpu_bf16(both, _no_gpu(), "x", EMULATED).detail


def test_doctor_is_quiet_where_bf16_is_native_or_unused(params):
    bf16 = _with(params, "train", amp="bf16")
    assert check_cpu_bf16(bf16, _no_gpu(), "AMD EPYC 9B14", NATIVE).status == "ok"
    assert check_cpu_bf16(params, _no_gpu(), "AMD EPYC 7B12", EMULATED).status == "ok"
    gpu = TorchFacts("2.14.1+cu130", "13.0", "9.24.0", [], [GpuInfo(0, "H100", 79.2, (9, 0))])
    assert check_cpu_bf16(bf16, gpu, "AMD EPYC 7B12", EMULATED).status == "ok"  # trains on GPU


# --------------------------------------------------------------------------- recommendation


@dataclass
class FakeStep:
    """A step that advances a fake clock by its cost and returns fixed losses."""

    clock: list[float]
    seconds: float
    loss: float

    def __call__(self):
        self.clock[0] += self.seconds
        return type("Result", (), {"values": {"loss/generator": self.loss, "grad/x": 9.0}})()


def fake_maker(costs: dict[tuple[str, str], tuple[float, float]], clock: list[float]):
    """Steps whose (seconds, loss) depend on the (amp, deform_conv) they are built with."""

    def make(params, device, clips):
        assert clips == 1 and device == CPU
        seconds, loss = costs[(params.train.amp, params.train.deform_conv)]
        return FakeStep(clock, seconds, loss)

    return make


def _measure(params, costs, bf16=NATIVE, **cfg):
    clock = [0.0]
    found = switches.measure_switches(
        params,
        SwitchParams(warmup=1, steps=2, **cfg),
        CPU,
        fake_maker(costs, clock),
        clock=lambda: clock[0],
        bf16=bf16,
    )
    return found, {r.name: r for r in found.results}


FP32 = ("fp32", "torchvision")
SAMPLED = ("fp32", "sampled")
BF16 = ("bf16", "torchvision")
BOTH = ("bf16", "sampled")


def test_fastest_switch_within_tolerance_is_recommended(params):
    costs = {FP32: (10.0, 1.0), SAMPLED: (9.5, 1.0), BF16: (8.0, 1.01), BOTH: (5.0, 1.02)}
    found, by = _measure(params, costs)
    assert found.recommended == "sampled+bf16"
    assert by["sampled+bf16"].speedup == pytest.approx(2.0)
    assert by["sampled+bf16"].loss_deviation == pytest.approx(0.02)
    assert by["fp32"].step_s == 10.0 and by["fp32"].speedup == 1.0
    assert "2.00x" in found.reason


def test_a_switch_slower_than_fp32_is_never_recommended(params):
    """The AVX2 EPYC case: bf16 emulated, several times slower; sampled a little faster."""
    costs = {FP32: (10.0, 1.0), SAMPLED: (9.5, 1.0), BF16: (50.0, 1.0), BOTH: (60.0, 1.0)}
    found, by = _measure(params, costs)
    assert found.recommended == "fp32"  # sampled's 1.05x is below min_speedup (noise)
    assert by["bf16"].speedup == pytest.approx(0.2)
    found, _ = _measure(params, costs, min_speedup=1.0)
    assert found.recommended == "sampled"


def test_a_fast_switch_beyond_the_loss_tolerance_is_not_recommended(params):
    costs = {FP32: (10.0, 1.0), SAMPLED: (9.9, 1.0), BF16: (2.0, 1.5), BOTH: (6.0, 1.01)}
    found, by = _measure(params, costs)
    assert by["bf16"].loss_deviation == pytest.approx(0.5) and "loss deviation" in by["bf16"].note
    assert found.recommended == "sampled+bf16"


def test_bf16_is_not_measured_on_a_cpu_without_it_and_says_why(params):
    costs = {FP32: (10.0, 1.0), SAMPLED: (5.0, 1.0)}  # a bf16 step would KeyError here
    found, by = _measure(params, costs, bf16=EMULATED)
    assert not by["bf16"].measured and not by["sampled+bf16"].measured
    assert "refused" in by["bf16"].note and len(found.warnings) == 2
    assert found.recommended == "sampled"
    text = "\n".join(switches.markdown_lines(found))
    assert "| bf16 | - | not measured |" in text and "Recommended here: sampled" in text


def test_a_candidate_with_an_unknown_setting_names_its_key(params):
    cfg = SwitchParams(candidates={"warp": {"deform_conv": "warp"}})
    with pytest.raises(UserError, match=r"cost\.switches\.candidates\.warp: deform_conv"):
        switches.switched(params, "warp", {"deform_conv": "warp"}, cfg)


def test_cuda_only_switches_do_not_apply_on_the_cpu():
    assert "CUDA" in switches.why_not({"amp": "fp16"}, CPU, NATIVE)
    assert "CUDA" in switches.why_not({"tf32": True}, CPU, NATIVE)
    assert switches.why_not({"deform_conv": "sampled"}, CPU, EMULATED) == ""


def test_real_steps_a_deliberately_slowed_switch_is_not_recommended(params):
    """Real training steps of the sample model (2+1 frames). 'slowed' is the sampled deformable
    conv plus a sleep of twice the fp32 step, so it is slower than fp32 whatever the noise."""
    small = _with(params, "train", num_local_frames=2, num_ref_frames=1)
    fp32_s: list[float] = []

    def make(p, device, clips):
        step = make_training_step(p, device, clips)
        if not fp32_s:  # the baseline is built and run first: time it

            def timed():
                start = time.perf_counter()
                result = step()
                fp32_s.append(time.perf_counter() - start)
                return result

            return timed
        if p.train.cudnn_benchmark:  # 'sampled' as it is
            return step

        def slowed():
            time.sleep(2 * fp32_s[0])
            return step()

        return slowed

    # cudnn_benchmark has no effect on a CPU: it only tells the maker which switch to slow down.
    cfg = SwitchParams(
        candidates={
            "sampled": {"deform_conv": "sampled"},
            "slowed": {"deform_conv": "sampled", "cudnn_benchmark": False},
        },
        warmup=0,
        steps=1,
        min_speedup=1.0,
    )
    found = switches.measure_switches(small, cfg, CPU, make)
    by = {r.name: r for r in found.results}
    assert len(fp32_s) == 1 and by["fp32"].measured
    assert by["slowed"].speedup < 0.5 and by["slowed"].loss_deviation < 1e-4
    assert by["sampled"].loss_deviation < 1e-4  # the same operation, reformulated
    assert found.recommended != "slowed"
