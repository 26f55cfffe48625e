"""Shared helpers of the benchmarks: timing, machine description, model sizes, report printing."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import torch


def machine() -> dict:
    info = {"machine": platform.machine(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(function, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` calls (synchronising CUDA)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def interleaved(functions: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per function, measured round-robin so that machine noise hits all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            samples[name] += timed(function, 1, warmup=0)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(result: dict, summary: str) -> dict:
    print(json.dumps(result, indent=2))
    print(summary)
    return result


def medium_unet_kwargs() -> dict:
    """A 'medium' UNet for CPU benchmarks: SD's block layout at about a tenth of its width."""
    return dict(sample_size=32, block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=256,
                attention_head_dim=8, norm_num_groups=32,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
