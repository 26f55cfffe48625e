"""Quantization modes: Linear weight bytes, peak memory, time per image, deviation from fp32.

    python -m bench.quantization [--checkpoint assets/zeroft-toy] [--size medium]

``none`` and ``int8`` (torchao) run on a CPU; ``bnb-8bit`` and ``bnb-4bit`` need CUDA and are
reported as skipped elsewhere. Each mode runs in a fresh process so that peak memory (max RSS
on CPU, max allocated on CUDA) is its own. Deviation: mean and max absolute pixel difference
(0..1) from the fp32 images with the same seeds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .common import machine, report

ROOT = Path(__file__).resolve().parent.parent


def run_mode(checkpoint: str, mode: str, steps: int, out: Path) -> None:
    from zeroft import ZeroFTPipeline
    from zeroft.quantization import linear_weight_bytes

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = ZeroFTPipeline.from_pretrained(checkpoint, device=device, quantization=mode,
                                          dtype=torch.float16 if device == "cuda" else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    photo = next(Path("assets/examples").glob("object-*.png"), None) if Path(checkpoint).name == "zeroft-toy" else None
    kwargs = dict(num_images=4, seed=0, num_inference_steps=steps, output_type="np")
    if photo is not None:
        kwargs["object_image"] = photo
    pipe("one object on a white background", **kwargs)  # warm-up
    started = time.perf_counter()
    images = pipe("one object on a white background", **kwargs).images
    seconds = (time.perf_counter() - started) / 4
    np.save(out / f"{mode}.npy", images)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    (out / f"{mode}.json").write_text(json.dumps({
        "unet_linear_weight_bytes": linear_weight_bytes(pipe.unet),
        "text_encoder_linear_weight_bytes": linear_weight_bytes(pipe.text_encoder),
        "peak_memory_bytes": int(peak), "peak_memory_kind": "cuda max allocated" if device == "cuda" else "process max RSS",
        "seconds_per_image": round(seconds, 4)}))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="assets/zeroft-toy")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="bench/results/quantization")
    parser.add_argument("--_mode", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args._mode:
        run_mode(args.checkpoint, args._mode, args.steps, out)
        return {}
    results = {}
    for mode in ("none", "int8", "bnb-8bit", "bnb-4bit"):
        if mode.startswith("bnb") and not torch.cuda.is_available():
            results[mode] = {"skipped": "bitsandbytes needs a CUDA GPU; none on this machine"}
            continue
        subprocess.run([sys.executable, "-m", "bench.quantization", "--checkpoint", args.checkpoint, "--steps",
                        str(args.steps), "--out", str(out), "--_mode", mode], cwd=ROOT, check=True)
        results[mode] = json.loads((out / f"{mode}.json").read_text())
    reference = np.load(out / "none.npy")
    for mode, result in results.items():
        if "skipped" in result:
            continue
        deviation = np.abs(np.load(out / f"{mode}.npy") - reference)
        result["mean_abs_deviation"] = round(float(deviation.mean()), 5)
        result["max_abs_deviation"] = round(float(deviation.max()), 5)
        result["unet_linear_bytes_ratio_vs_none"] = round(
            results["none"]["unet_linear_weight_bytes"] / result["unet_linear_weight_bytes"], 2)
    int8 = results["int8"]
    return report({"benchmark": "quantization", "checkpoint": args.checkpoint, **machine(), "modes": results},
                  f"int8: UNet Linear weights {int8['unet_linear_bytes_ratio_vs_none']}x smaller, "
                  f"{int8['seconds_per_image']:.3f} s/image vs {results['none']['seconds_per_image']:.3f}, "
                  f"mean deviation {int8['mean_abs_deviation']:.4f}")


if __name__ == "__main__":
    main()
