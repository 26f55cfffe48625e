"""Will a preset fit in this machine's memory? Checked before anything loads on a CPU, where running out of memory
gets the process killed by the kernel with no message at all.

The figures are peaks measured on full-size models with random weights laid out like the real Hub
repositories (resident memory at its highest over loading and generating one image), not estimates:
SD1.5 from ``bench/results/full_size.json`` (``python -m bench.full_size``, 512 px); SDXL at 512 px in
float32 from the run that found this defect (issue 39, reported as GB and taken here as GiB, which errs
toward refusing by 7%), at 1024 px in bfloat16 from full_size.json; the IP-Adapter Plus presets from its
sd15-plus and sdxl-plus rows; FLUX.1 with int8 in bfloat16 from its flux row (19.48 GiB at 256 and 512 px, reached
while loading). Where no run was possible (FLUX.1 unquantized: its bf16 weights alone are more than the machine
that measured it has) the figure is a floor from the size of the weights themselves (:data:`CPU_FLOOR_GIB`), and
float32 with int8 takes the bfloat16 peak as its floor. Larger images need more than the
512 px figures, so the check is a floor: it refuses what cannot fit, it does not promise the rest will.
A combination not measured is not checked.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

# (preset, dtype, quantization) -> peak resident memory in GiB of loading the preset and generating one image on a CPU
MEASURED_CPU_PEAK_GIB = {
    ("ip-adapter-sd15", "float32", "none"): 8.38,
    ("ip-adapter-sd15", "float32", "int8"): 7.01,
    ("ip-adapter-sdxl-vit-h", "float32", "none"): 18.9,
    ("ip-adapter-sdxl-vit-h", "float32", "int8"): 10.2,
    ("ip-adapter-sdxl", "float32", "none"): 23.0,
    ("ip-adapter-sdxl", "float32", "int8"): 13.0,
    # bench.full_size's sdxl/bfloat16/zeroft rows, which ran the ViT-bigG/14 tower (ip-adapter-sdxl's); for ViT-H
    # (the sdxl-plus rows' tower) they are an upper bound
    ("ip-adapter-sdxl", "bfloat16", "none"): 14.63,
    ("ip-adapter-sdxl", "bfloat16", "int8"): 11.85,
    ("ip-adapter-sdxl-vit-h", "bfloat16", "none"): 14.63,
    ("ip-adapter-sdxl-vit-h", "bfloat16", "int8"): 11.85,
    # IP-Adapter Plus: bench.full_size's sd15-plus and sdxl-plus zeroft rows (ViT-H/14 patch tokens, a resampler)
    ("ip-adapter-plus-sd15", "float32", "none"): 8.52,
    ("ip-adapter-plus-sd15", "float32", "int8"): 7.20,
    ("ip-adapter-plus-sdxl-vit-h", "bfloat16", "none"): 11.61,
    ("ip-adapter-plus-sdxl-vit-h", "bfloat16", "int8"): 10.96,
    ("ip-adapter-flux-dev", "bfloat16", "int8"): 19.48,  # bench.full_size's flux row (256 and 512 px)
}
# Floors where no run could measure a peak, GiB: the weights alone (bench.full_size's FLUX.1-dev files, the real
# repositories' sizes: transformer 23.80 GB, T5-XXL 9.52 GB, CLIP text, VAE, CLIP ViT-L/14 image tower and the
# XLabs-shaped adapter, 32.98 GiB in bf16, twice that in float32); float32 + int8 at least the bf16 + int8 peak.
CPU_FLOOR_GIB = {
    ("ip-adapter-flux-dev", "bfloat16", "none"): 32.98,
    ("ip-adapter-flux-dev", "float32", "none"): 65.95,
    ("ip-adapter-flux-dev", "float32", "int8"): MEASURED_CPU_PEAK_GIB[("ip-adapter-flux-dev", "bfloat16", "int8")],
}
# The rows of bench/results/full_size.json each measured peak comes from (tests/test_memory.py checks they agree).
MEASURED_FROM = {
    ("ip-adapter-sd15", "float32"): "sd15/float32/zeroft",
    ("ip-adapter-sdxl", "bfloat16"): "sdxl/bfloat16/zeroft",
    ("ip-adapter-plus-sd15", "float32"): "sd15-plus/float32/zeroft",
    ("ip-adapter-plus-sdxl-vit-h", "bfloat16"): "sdxl-plus/bfloat16/zeroft",
}


def available_gib(meminfo: str | Path = "/proc/meminfo") -> float | None:
    """Memory the kernel says a new process can use without swapping (Linux MemAvailable), in GiB; None elsewhere."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        return None
    return None


def check_fits(preset, device, dtype, quantization: str, available: float | None = None) -> None:
    """Refuse, before loading, a preset whose measured CPU peak is more than the memory available.

    Args:
        preset: what is being loaded; only preset names are checked.
        device, dtype: the torch device and dtype it would load to; only CPU loads are checked.
        quantization: "none" or "int8".
        available: GiB available (default: :func:`available_gib`; None there means not checked).

    Raises:
        InputError: naming the peak, what is available, and int8's peak where that would fit.
    """
    if getattr(device, "type", device) != "cpu":
        return
    dtype = str(dtype).removeprefix("torch.")
    need = _need((str(preset), dtype, quantization))
    available = available_gib() if available is None else available
    if need is None or available is None or need[0] <= available:
        return
    smaller = _need((preset, dtype, "int8")) if quantization != "int8" else None
    advice = (f"Use quantization int8 (--quantization int8), which {_said(smaller)}, or a machine with more memory"
              if smaller is not None and smaller[0] <= available else "Use a machine with more memory, or a GPU")
    raise InputError(f"{preset} in {dtype} on a CPU {_said(need)}; this machine has {available:.1f} GiB available, so "
                     f"the system would stop it partway. {advice}.")


def _need(key: tuple[str, str, str]) -> tuple[float, bool] | None:
    """(GiB, measured) for a (preset, dtype, quantization): a measured peak, else a floor, else None."""
    if key in MEASURED_CPU_PEAK_GIB:
        return MEASURED_CPU_PEAK_GIB[key], True
    return (CPU_FLOOR_GIB[key], False) if key in CPU_FLOOR_GIB else None


def _said(need: tuple[float, bool]) -> str:
    gib, measured = need
    return f"peaked at about {gib:g} GiB of memory when measured" if measured else f"needs at least {gib:g} GiB of memory"
