"""Training throughput on the tiny config: 1 vs 2 processes, and the regularizers' overhead.

    python -m bench.train_throughput [--steps 30] [--batch 8]

Prints one JSON object and a one-line summary. Every number comes from train.train itself (the
samples/s it records in the exported checkpoint), run in fresh processes on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAIN = ["--cross_reference", "0", "--no-mask_condition", "--no-drop_general_object",
         "--drop_text", "0", "--drop_object", "0", "--drop_both", "0"]


def run(work: Path, name: str, processes: int, steps: int, batch: int, extra: list[str]) -> float:
    argv = ["--base_model", str(work / "ckpt" / "base"), "--encoder", str(work / "ckpt" / "encoder"),
            "--domain_data", str(work / "domain"), "--general_data", str(work / "general"),
            "--resolution", "64", "--train_batch_size", str(batch), "--max_train_steps", str(steps),
            "--checkpointing_steps", str(steps), "--output_dir", str(work / name), "--masker", "border",
            "--report_to", "none", "--lr_warmup_steps", "0", *extra]
    if processes == 1:
        command = [sys.executable, "-m", "train.train", *argv]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "train.train", *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(max(1, os.cpu_count() // processes))}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    config = json.loads((work / name / "final" / "zeroft_config.json").read_text())
    return config["training"]["samples_per_second"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="per process")
    args = parser.parse_args(argv)
    from train.tiny_data import write_domain_imagefolder, write_general_jsonl
    from zeroft.tiny import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        make_tiny_checkpoint(work / "ckpt")
        write_domain_imagefolder(work / "domain", photos_per_identity=6)
        write_general_jsonl(work / "general", count=24)
        results = {
            "recipe_1_process": run(work, "r1", 1, args.steps, args.batch, []),
            "recipe_2_processes": run(work, "r2", 2, args.steps, args.batch, []),
            "plain_1_process": run(work, "p1", 1, args.steps, args.batch, PLAIN),
        }
    report = {
        "benchmark": "train_throughput", "unit": "samples/s", "steps": args.steps, "batch_per_process": args.batch,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", **results,
        "speedup_2_vs_1": round(results["recipe_2_processes"] / results["recipe_1_process"], 3),
        "regularizer_overhead": round(results["plain_1_process"] / results["recipe_1_process"] - 1, 3),
    }
    print(json.dumps(report, indent=2))
    print(f"train throughput: {results['recipe_1_process']:.1f} samples/s on 1 process, "
          f"{results['recipe_2_processes']:.1f} on 2 ({report['speedup_2_vs_1']}x); regularizers cost "
          f"{report['regularizer_overhead']:+.1%} vs a plain self-conditioned loop")
    return report


if __name__ == "__main__":
    main()
