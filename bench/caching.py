"""First vs repeated generation with the same photo: masker and encoder calls, and time.

    python -m bench.caching [--checkpoint assets/zeroft-toy] [--repeats 5]

The second and later calls find the mask and the object embedding in zeroft's caches (keyed
by the photo's content), and the prompt embeddings too. Prints JSON and a one-line summary.
"""

from __future__ import annotations

import argparse
import statistics
import time

from PIL import Image

from zeroft import ZeroFTPipeline
from zeroft.presets import EMBEDDED_CHECKPOINT

from .common import machine, report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(EMBEDDED_CHECKPOINT))
    parser.add_argument("--image", default="assets/examples/object-01.png")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    pipe = ZeroFTPipeline.from_pretrained(args.checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    photo = Image.open(args.image)
    kwargs = dict(num_images=1, seed=0)
    first, repeated = [], []
    for _ in range(args.repeats):
        for cache in (pipe.mask_cache, pipe.embedding_cache, pipe.prompt_cache):
            cache.clear()
        started = time.perf_counter()
        pipe("one object on a white background", object_image=photo.copy(), **kwargs)
        first.append(time.perf_counter() - started)
        calls = (pipe.masker.calls, pipe.encoder_calls)
        started = time.perf_counter()
        pipe("one object on a white background", object_image=photo.copy(), **kwargs)
        repeated.append(time.perf_counter() - started)
        repeat_calls = (pipe.masker.calls - calls[0], pipe.encoder_calls - calls[1])
    started = time.perf_counter()
    for _ in range(args.repeats):
        for cache in (pipe.mask_cache, pipe.embedding_cache):
            cache.clear()
        pipe.encode_object(photo.copy())
    personalise = (time.perf_counter() - started) / args.repeats
    result = {
        "benchmark": "caching", "checkpoint": args.checkpoint, "masker": pipe.masker.spec, **machine(),
        "first_call_seconds": round(statistics.median(first), 4),
        "repeated_call_seconds": round(statistics.median(repeated), 4),
        "masker_calls_on_repeat": repeat_calls[0], "encoder_calls_on_repeat": repeat_calls[1],
        "mask_plus_encode_seconds": round(personalise, 5),
    }
    return report(result, f"caching: repeated photo runs the masker {repeat_calls[0]}x and the encoder "
                          f"{repeat_calls[1]}x; {result['first_call_seconds']:.3f} s → {result['repeated_call_seconds']:.3f} s per call")


if __name__ == "__main__":
    main()
