"""zeroft.memory: the measured CPU peaks it refuses by are the benchmark's, and a preset that cannot fit is refused
before anything loads, with int8 offered where that would fit."""

import json
from pathlib import Path

import pytest

from zeroft import InputError
from zeroft.memory import MEASURED_CPU_PEAK_GIB, MEASURED_FROM, check_fits

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "full_size.json"


def test_the_measured_peaks_are_the_full_size_benchmarks():
    cases = json.loads(RESULTS.read_text())["cases"]
    for (preset, dtype), case in MEASURED_FROM.items():
        for quantization in ("none", "int8"):
            assert MEASURED_CPU_PEAK_GIB[(preset, dtype, quantization)] == cases[f"{case}/{quantization}"]["peak_gib"]


def test_a_plus_preset_too_big_for_this_cpu_is_refused_with_int8_offered():
    with pytest.raises(InputError, match=r"peaked at about 11.61 GiB.*int8.*10.96 GiB"):
        check_fits("ip-adapter-plus-sdxl-vit-h", "cpu", "bfloat16", "none", available=11.0)
    check_fits("ip-adapter-plus-sdxl-vit-h", "cpu", "bfloat16", "int8", available=11.0)  # fits
    check_fits("ip-adapter-plus-sdxl-vit-h", "cuda", "bfloat16", "none", available=1.0)  # GPUs are not checked here
