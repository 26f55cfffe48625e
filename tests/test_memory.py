"""zeroft.memory: the measured CPU peaks it refuses by are the benchmark's, and a preset that cannot fit is refused
before anything loads, with int8 offered where that would fit."""

import json
from pathlib import Path

import pytest

from zeroft import InputError
from zeroft.memory import CPU_FLOOR_GIB, MEASURED_CPU_PEAK_GIB, MEASURED_FROM, check_fits

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "full_size.json"


def test_the_measured_peaks_are_the_full_size_benchmarks():
    cases = json.loads(RESULTS.read_text())["cases"]
    for (preset, dtype), case in MEASURED_FROM.items():
        for quantization in ("none", "int8"):
            assert MEASURED_CPU_PEAK_GIB[(preset, dtype, quantization)] == cases[f"{case}/{quantization}"]["peak_gib"]


def test_flux_on_a_cpu_is_refused_below_its_measured_int8_peak_and_its_weights_floor():
    case = json.loads(RESULTS.read_text())["cases"]["flux/bfloat16/zeroft/int8"]
    assert MEASURED_CPU_PEAK_GIB[("ip-adapter-flux-dev", "bfloat16", "int8")] == case["peak_gib"]
    assert CPU_FLOOR_GIB[("ip-adapter-flux-dev", "float32", "int8")] == case["peak_gib"]
    with pytest.raises(InputError, match=r"needs at least 32.98 GiB.*int8.*peaked at about 19.48 GiB"):
        check_fits("ip-adapter-flux-dev", "cpu", "bfloat16", "none", available=22.0)
    with pytest.raises(InputError, match=r"needs at least 65.95 GiB.*int8.*needs at least 19.48 GiB"):
        check_fits("ip-adapter-flux-dev", "cpu", "float32", "none", available=22.0)
    with pytest.raises(InputError, match=r"peaked at about 19.48 GiB.*Use a machine with more memory, or a GPU"):
        check_fits("ip-adapter-flux-dev", "cpu", "bfloat16", "int8", available=16.0)
    check_fits("ip-adapter-flux-dev", "cpu", "bfloat16", "int8", available=22.0)  # fits


def test_a_plus_preset_too_big_for_this_cpu_is_refused_with_int8_offered():
    with pytest.raises(InputError, match=r"peaked at about 11.61 GiB.*int8.*10.96 GiB"):
        check_fits("ip-adapter-plus-sdxl-vit-h", "cpu", "bfloat16", "none", available=11.0)
    check_fits("ip-adapter-plus-sdxl-vit-h", "cpu", "bfloat16", "int8", available=11.0)  # fits
    check_fits("ip-adapter-plus-sdxl-vit-h", "cuda", "bfloat16", "none", available=1.0)  # GPUs are not checked here
