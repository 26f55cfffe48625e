"""Does the method work on objects it never saw? The toy world's evaluation.

    python -m bench.toyworld_eval --checkpoint assets/zeroft-toy [--work runs/toyworld] [--out bench/results/toyworld]
    python -m bench.toyworld_eval --checkpoint runs/lat32/zeroft/final --work runs/lat32 --curve-only \
        --defaults-from assets/zeroft-toy      # a build stopped part way, scored the way the shipped model was

On held-out identities (never rendered in training) × every context prompt, with fixed seeds,
the judge (train.toyworld's attribute classifier) reads each generated image. Rows: zeroft;
text only (the same model with object guidance 0); a per-object fine-tuning baseline
(DreamBooth-style, on the same single photo, from the same base model); and, when ``--work``
holds them, the ablations retrained by ``python -m train.toyworld ablations``. Prints a table,
writes ``toyworld_eval.json``, a sample grid and, with ``--curve``, accuracy against training steps.
Chance levels are printed beside each metric; the guidance used is the checkpoint's default,
chosen on training identities by the build, never on this test set.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from train.toyworld.evaluate import (CHANCE, evaluate, finetune_per_object, generate_finetuned, load_judge, make_pairs,
                                     position_copy_chance, score)
from train.toyworld.stages import build_device
from train.toyworld.world import shapes_in_turn, split_identities
from zeroft.grid import make_grid
from zeroft import ZeroFTPipeline
from zeroft.config import ZeroFTConfig

METRICS = ("identity", "text", "both", "position_copy", "rotation_copy")


def personalization_seconds(pipe, photo: Image.Image, repeats: int = 5) -> float:
    """Mask + encode one photo, uncached: all the per-object work zeroft does."""
    times = []
    for _ in range(repeats):
        pipe.embedding_cache.clear()
        pipe.mask_cache.clear()
        started = time.perf_counter()
        pipe.encode_object(photo)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def finetune_row(base: Path, pairs, judge, objects: int, steps: int, guidance: float, sampler_steps: int, seed: int,
                 device: str = "cpu"):
    by_reference = {}
    for pair in pairs:
        by_reference.setdefault(id(pair.reference), []).append(pair)
    groups = list(by_reference.values())[:objects]
    images, used, seconds = [], [], []
    for group in groups:
        pipe, spent = finetune_per_object(base, group[0], steps, 1e-4, seed, device)
        seconds.append(spent)
        images += generate_finetuned(pipe, group, guidance, sampler_steps)
        used += group
    result = score(judge, images, used)
    result["seconds_per_object"] = round(float(np.mean(seconds)), 2)
    result["fine_tuning_steps"] = steps
    return result


def load_training_state(pipe, folder: Path) -> None:
    """Weights of a train.train checkpoint folder (EMA weights when the run kept them) into ``pipe``."""
    from safetensors.torch import load_file

    pipe.unet.load_state_dict(load_file(str(folder / "model.safetensors")))
    ema = folder / "custom_checkpoint_0.pkl"
    if ema.is_file():
        shadow = torch.load(ema, weights_only=True, map_location="cpu")["shadow_params"]
        with torch.no_grad():
            for parameter, value in zip(pipe.unet.parameters(), shadow):
                parameter.copy_(value)
    pipe.embedding_cache.clear()


def curve(pipe, run: Path, judge, pairs, defaults, max_points: int = 8) -> list[dict]:
    """Each saved training state of ``run`` (at most ``max_points``, evenly spaced) loaded into ``pipe`` in turn and
    scored on ``pairs``; ``pipe`` is left holding the last state's weights."""
    from train.checkpointing import list_checkpoints

    points = []
    saved = list_checkpoints(run)
    every = max(1, -(-len(saved) // max_points))
    for step, folder in saved[every - 1::every]:
        load_training_state(pipe, folder)
        metrics, _ = evaluate(pipe, judge, pairs, defaults.text_guidance, defaults.object_guidance, defaults.steps)
        points.append({"step": step, **{k: metrics[k] for k in ("identity", "text", "both", "shape_acc", "colour_acc",
                                                                  "pattern_acc")}})
        print(f"  step {step:6d}: identity {metrics['identity']:.3f} text {metrics['text']:.3f} "
              f"(shape {metrics['shape_acc']:.3f}, pattern {metrics['pattern_acc']:.3f})")
    return points


def curve_only(args, pipe, judge, pairs, defaults, report: dict, out: Path) -> dict:
    """``--curve-only``: ``report`` (the header ``main`` fills in) with the curve of ``pairs`` at the chosen saved states."""
    run = Path(args.work) / "zeroft"
    print(f"saved states of {run} on {len(pairs)} held-out pairs "
          f"(w_text {defaults.text_guidance}, w_obj {defaults.object_guidance}, views {report['views']})")
    points = curve(pipe, run, judge, pairs, defaults, args.curve_points)
    if not points:
        raise SystemExit(f"{run} holds no saved training states (checkpoint-N folders).")
    report.update(work=args.work, defaults_from=args.defaults_from, pairs=len(pairs), curve=points)
    plot(points, out / "curve.png")
    (out / "toyworld_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def plot(points: list[dict], path: Path) -> None:
    """Identity and text accuracy against training steps, drawn with PIL."""
    width, height, margin = 640, 360, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    last = max(p["step"] for p in points)
    x = lambda step: margin + (width - 2 * margin) * step / last  # noqa: E731
    y = lambda value: height - margin - (height - 2 * margin) * value  # noqa: E731
    draw.line([(margin, margin), (margin, height - margin), (width - margin, height - margin)], fill="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(margin - 4, y(tick)), (width - margin, y(tick))], fill=(225, 225, 225))
        draw.text((8, y(tick) - 6), f"{tick:.2f}", fill="black")
    for step in (0, last // 2, last):
        draw.text((x(step) - 12, height - margin + 8), str(step), fill="black")
    draw.text((width // 2 - 40, height - 20), "training steps", fill="black")
    for key, colour in (("identity", (200, 30, 30)), ("text", (30, 90, 200)), ("both", (40, 150, 60))):
        line = [(x(p["step"]), y(p[key])) for p in points]
        draw.line(line, fill=colour, width=2)
        draw.text((width - margin - 60, margin + 14 * ("identity", "text", "both").index(key)), key, fill=colour)
    draw.text((margin + 8, 12), "held-out identities: accuracy vs zeroft training steps", fill="black")
    image.save(path)


def sample_grid(pipe, pairs_by_identity, prompts, defaults, path: Path) -> None:
    rows = []
    for pair in pairs_by_identity:
        out = pipe(prompts, image_embeds=pipe.encode_object(pair.reference)[0], num_inference_steps=defaults.steps,
                   generator=[torch.Generator().manual_seed(1000 + i) for i in range(len(prompts))])
        rows.append([pair.reference] + out.images)
    make_grid(rows, 96).save(path)


def table(rows: dict[str, dict], chance: dict[str, float]) -> str:
    lines = ["| row | pairs | identity | text | both | position copy | rotation copy | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        cells = [f"{r[m]:.3f}" if m in r else "–" for m in METRICS]
        lines.append(f"| {name} | {r['pairs']} | " + " | ".join(cells) + f" | {r.get('notes', '')} |")
    lines.append("| chance | – | " + " | ".join(f"{chance[m]:.3f}" for m in METRICS) + " | |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="assets/zeroft-toy")
    parser.add_argument("--judge", default="assets/toyworld-judge/judge.safetensors")
    parser.add_argument("--work", default="runs/toyworld", help="build folder: base model, ablations, training states")
    parser.add_argument("--out", default="bench/results/toyworld")
    parser.add_argument("--references", type=int, default=3, help="reference photos per held-out identity")
    parser.add_argument("--finetune-objects", type=int, default=4)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--ablation-references", type=int, default=1)
    parser.add_argument("--curve", action="store_true", help="also evaluate saved training states")
    parser.add_argument("--curve-points", type=int, default=8, help="at most this many states, evenly spaced")
    parser.add_argument("--curve-only", action="store_true",
                        help="only the curve: score --work's saved training states, no table rows (a build still training)")
    parser.add_argument("--defaults-from", default=None, metavar="CHECKPOINT",
                        help="guidance, sampler steps and encoder views of this checkpoint instead of --checkpoint's, "
                             "e.g. to score a partly trained build the way the shipped model was scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    args = parser.parse_args(argv)
    device = str(build_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    train_ids, held_out = split_identities()
    judge = load_judge(args.judge)
    pipe = ZeroFTPipeline.from_pretrained(args.checkpoint, device=device)
    defaults = pipe.zeroft_config.defaults
    if args.defaults_from:
        try:
            source = ZeroFTConfig.load(args.defaults_from)
        except (OSError, ValueError) as e:
            raise SystemExit(f"--defaults-from {args.defaults_from}: {e}") from e
        defaults = source.defaults
        pipe.set_encoder_views(source.encoder.views)
    report = {"checkpoint": args.checkpoint, "device": device,
              "guidance": {"text": defaults.text_guidance, "object": defaults.object_guidance},
              "sampler_steps": defaults.steps, "views": pipe.object_encoder.config.views,
              "judge": json.loads((Path(args.judge).parent / "judge.json").read_text())}
    ablation_pairs = make_pairs(held_out, args.ablation_references, args.seed + 700)  # also the curve's pairs
    if args.curve_only:
        return curve_only(args, pipe, judge, ablation_pairs, defaults, report, out)
    pairs = make_pairs(held_out, args.references, args.seed + 500)
    chance = {**CHANCE, "position_copy": position_copy_chance()}
    rows: dict[str, dict] = {}

    print(f"zeroft on {len(pairs)} held-out pairs (w_text {defaults.text_guidance}, w_obj {defaults.object_guidance})")
    rows["zeroft"], _ = evaluate(pipe, judge, pairs, defaults.text_guidance, defaults.object_guidance, defaults.steps)
    rows["text only (w_obj = 0)"], _ = evaluate(pipe, judge, pairs, defaults.text_guidance, 0.0, defaults.steps)
    training_pairs = make_pairs(train_ids[::6], 1, args.seed + 600)
    rows["zeroft, training identities"], _ = evaluate(pipe, judge, training_pairs, defaults.text_guidance,
                                                      defaults.object_guidance, defaults.steps)
    zeroft_seconds = personalization_seconds(pipe, pairs[0].reference)
    rows["zeroft"]["notes"] = f"personalisation {zeroft_seconds * 1000:.1f} ms/object (mask + encode)"

    base = work / "base" / "base"
    base_done = work / "base" / "done.json"
    grown_from = json.loads(base_done.read_text()).get("grown_from") if base_done.is_file() else None
    if grown_from:  # train/toyworld/grow.py: that "base" is the grown starting point, not a text-to-image model
        report["finetune_skipped"] = (f"{work} was grown from {grown_from}: it has no trained base model to fine-tune "
                                      "per object, so the fine-tuning baseline is that build's")
    elif base.is_dir():
        row = finetune_row(base, pairs, judge, args.finetune_objects, args.finetune_steps, defaults.text_guidance,
                           defaults.steps, args.seed, device)
        row["notes"] = (f"{row['fine_tuning_steps']} steps, {row['seconds_per_object']:.1f} s/object, "
                        f"{row['seconds_per_object'] / zeroft_seconds:,.0f}x zeroft's time")
        rows[f"per-object fine-tuning ({args.finetune_objects} objects)"] = row

    ablations = work / "ablations" / "ablations.json"
    if ablations.is_file():
        for name, info in json.loads(ablations.read_text()).items():
            variant = ZeroFTPipeline.from_pretrained(info["checkpoint"], device=device)
            row, _ = evaluate(variant, judge, ablation_pairs, defaults.text_guidance, defaults.object_guidance, defaults.steps)
            row["notes"] = f"ablation: {info['steps']} steps, {info['train_seconds'] / 60:.0f} min"
            rows[f"ablation: {name}"] = row

    by_identity = {}
    for pair in pairs:
        by_identity.setdefault(pair.identity, pair)
    spread = shapes_in_turn(list(by_identity.values()), lambda pair: pair.identity.shape)
    prompts = ["one object on a white background", "two objects on a black background",
               "one object on a brown background", "two objects on a gray background"]
    sample_grid(pipe, spread[:6], prompts, defaults, out / "samples.png")
    report.update(chance=chance, rows=rows)
    if args.curve:
        points = curve(pipe, work / "zeroft", judge, ablation_pairs, defaults, args.curve_points)
        report["curve"] = points
        plot(points, out / "curve.png")
    (out / "toyworld_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows, chance))
    return report


if __name__ == "__main__":
    main()
