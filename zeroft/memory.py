"""Will a preset fit in this machine's memory? Checked before anything loads on a CPU, where running out of memory
gets the process killed by the kernel with no message at all.

The figures are peaks measured on full-size models with random weights laid out like the real Hub
repositories (resident memory at its highest over loading and generating one image), not estimates:
SD1.5 from ``bench/results/full_size.json`` (``python -m bench.full_size``, 512 px); SDXL at 512 px in
float32 from the run that found this defect (issue 39, reported as GB and taken here as GiB, which errs
toward refusing by 7%), at 1024 px in bfloat16 from full_size.json; the IP-Adapter Plus presets from its
sd15-plus and sdxl-plus rows. Larger images need more than the
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
    need = MEASURED_CPU_PEAK_GIB.get((str(preset), dtype, quantization))
    available = available_gib() if available is None else available
    if need is None or available is None or need <= available:
        return
    smaller = MEASURED_CPU_PEAK_GIB.get((preset, dtype, "int8")) if quantization != "int8" else None
    advice = (f"Use quantization int8 (--quantization int8), which peaked at about {smaller:g} GiB, or a machine with "
              "more memory" if smaller is not None and smaller <= available else "Use a machine with more memory, or a GPU")
    raise InputError(f"{preset} in {dtype} on a CPU peaked at about {need:g} GiB of memory when measured; this machine "
                     f"has {available:.1f} GiB available, so the system would stop it partway. {advice}.")
