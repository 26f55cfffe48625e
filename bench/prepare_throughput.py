"""Throughput of train.prepare on the tiny path (tiny random BLIP + tiny open_clip + border masks), on this CPU.

    python -m bench.prepare_throughput [--photos 60] [--batch 8]

Real models are slower: this measures zeroft's own overhead (loading, masking, writing, the
progress log) around a captioner and a zero-shot scorer that cost almost nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from PIL import Image

from train.prepare import main as prepare
from train.tiny_data import write_tiny_captioner, write_tiny_zero_shot_clip

from .common import machine, report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        for index in range(args.photos):
            folder = root / "photos" / f"id{index % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB", (256, 256), (20, 20, 20))
            image.paste((200, 40 + index, 90), (60, 50, 190, 210))
            image.save(folder / f"{index}.jpg")
        vocabulary = root / "vocab.json"
        vocabulary.write_text(json.dumps({"zero_shot": {"groups": [["red", "green"], ["round", "square"]], "threshold": 0.0}}))
        summary = prepare(["--input", str(root / "photos"), "--output", str(root / "out"), "--captioner",
                           str(write_tiny_captioner(root / "blip")), "--vocabulary", str(vocabulary),
                           "--zero_shot_model", str(write_tiny_zero_shot_clip(root / "clip")), "--masker", "border",
                           "--batch_size", str(args.batch)])
    result = {"benchmark": "prepare_throughput", **machine(), "photos": args.photos, "photo_size": 256,
              "images_per_second": summary["images_per_second_this_run"], "seconds": summary["seconds_this_run"]}
    return report(result, f"train.prepare tiny path: {result['images_per_second']} images/s on this machine")


if __name__ == "__main__":
    main()
