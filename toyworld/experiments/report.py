"""Does the method work on objects it never saw? The toy world's evaluation report.

    python -m toyworld eval --checkpoint assets/zeroft-toy [--work runs/toyworld] [--out toyworld/results/toyworld]
    python -m toyworld eval --checkpoint runs/lat32/zeroft/final --work runs/lat32 --curve-only \
        --defaults-from assets/zeroft-toy      # a build stopped part way, scored the way the shipped model was

On held-out identities (never rendered in training) × every context prompt, with fixed seeds,
the judge (the toy world's attribute classifier) reads each generated image. Rows: zeroft;
text only (the same model with object guidance 0); a per-object fine-tuning baseline
(finetune.py, on the same single photo, from the same base model); and, when ``--work``
holds them, the ablations retrained by ``python -m toyworld ablations``. Prints a table,
writes ``toyworld_eval.json``, a sample grid and, with ``--curve``, accuracy against training steps.
Chance levels are printed beside each metric; the guidance used is the checkpoint's default,
chosen on training identities by the build, never on this test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zeroft import ZeroFTPipeline
from zeroft.config import GenerationDefaults, ZeroFTConfig
from zeroft.errors import InputError
from zeroft.grid import make_grid

from ..curve import curve, plot
from ..evaluate import CHANCE, EVALUATED_INTERVAL, Pair, evaluate, load_judge, make_pairs, position_copy_chance, score
from ..runtime import build_device
from ..world import shapes_in_turn, split_identities
from .finetune import ObjectFineTuning
from .personalization import encoding_seconds

METRICS = ("identity", "text", "both", "position_copy", "rotation_copy")
SAMPLE_PROMPTS = ["one object on a white background", "two objects on a black background",
                  "one object on a brown background", "two objects on a gray background"]


@dataclass(frozen=True)
class EvalOptions:
    """What ``python -m toyworld eval`` was asked for; each field is the flag of that name (toyworld/__main__.py
    gives the defaults and meanings)."""

    checkpoint: str
    judge: str
    work: str
    out: str
    references: int
    finetune_objects: int
    finetune_steps: int
    ablation_references: int
    curve: bool
    curve_points: int
    curve_only: bool
    defaults_from: str | None
    seed: int
    device: str
    identities: int | None = None  # only the first N identities of each split (None: all)


def scored_pipeline(checkpoint: str, defaults_from: str | None, device: str) -> tuple[ZeroFTPipeline, GenerationDefaults]:
    """The checkpoint, and the defaults it is scored at: its own, or ``defaults_from``'s (whose encoder views it
    then takes too)."""
    pipe = ZeroFTPipeline.from_pretrained(checkpoint, device=device)
    if not defaults_from:
        return pipe, pipe.zeroft_config.defaults
    try:
        source = ZeroFTConfig.load(defaults_from)
    except (OSError, ValueError) as e:
        raise InputError(f"--defaults-from {defaults_from}: {e}") from e
    pipe.set_encoder_views(source.encoder.views)
    return pipe, source.defaults


def report_header(options: EvalOptions, device: str, pipe: ZeroFTPipeline, defaults: GenerationDefaults) -> dict:
    """What every report starts with: the checkpoint, device, settings scored at, and the judge's own accuracy."""
    return {"checkpoint": options.checkpoint, "device": device,
            "guidance": {"text": defaults.text_guidance, "object": defaults.object_guidance},
            "sampler_steps": defaults.steps, "views": pipe.object_encoder.config.views,
            "judge": json.loads((Path(options.judge).parent / "judge.json").read_text())}


def curve_only(options: EvalOptions, pipe, judge, pairs, defaults, report: dict, out: Path) -> dict:
    """``--curve-only``: ``report`` (the header) with the curve of ``pairs`` at the chosen saved states."""
    run = Path(options.work) / "zeroft"
    print(f"saved states of {run} on {len(pairs)} held-out pairs "
          f"(w_text {defaults.text_guidance}, w_obj {defaults.object_guidance}, views {report['views']})")
    points = curve(pipe, run, judge, pairs, defaults, options.curve_points)
    if not points:
        raise InputError(f"{run} holds no saved training states (checkpoint-N folders).")
    report.update(work=options.work, defaults_from=options.defaults_from, pairs=len(pairs), curve=points)
    plot(points, out / "curve.png")
    (out / "toyworld_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def zeroft_rows(pipe, judge, pairs: list[Pair], training_pairs: list[Pair], defaults) -> dict[str, dict]:
    """zeroft at its defaults, the same model with object guidance 0, and zeroft on training identities."""
    print(f"zeroft on {len(pairs)} held-out pairs (w_text {defaults.text_guidance}, w_obj {defaults.object_guidance})")
    rows = {}
    rows["zeroft"], _ = evaluate(pipe, judge, pairs, defaults.text_guidance, defaults.object_guidance, defaults.steps)
    rows["text only (w_obj = 0)"], _ = evaluate(pipe, judge, pairs, defaults.text_guidance, 0.0, defaults.steps)
    rows["zeroft, training identities"], _ = evaluate(pipe, judge, training_pairs, defaults.text_guidance,
                                                      defaults.object_guidance, defaults.steps)
    return rows


def finetune_row(base: Path, pairs: list[Pair], judge, objects: int, steps: int, guidance: float, sampler_steps: int,
                 seed: int, device: str = "cpu") -> dict:
    """The fine-tuning baseline on the first ``objects`` references, each over its pairs; seconds per object count
    loading the base model and the fine-tuning steps."""
    by_reference = {}
    for pair in pairs:
        by_reference.setdefault(id(pair.reference), []).append(pair)
    images, used, seconds = [], [], []
    for group in list(by_reference.values())[:objects]:
        tuning = ObjectFineTuning(base, group[0], 1e-4, seed, device)
        seconds.append(tuning.setup_seconds + tuning.train(steps))
        images += tuning.generate(group, guidance, sampler_steps)
        used += group
    result = score(judge, images, used)
    result["seconds_per_object"] = round(float(np.mean(seconds)), 2)
    result["fine_tuning_steps"] = steps
    return result


def add_finetune_row(options: EvalOptions, rows: dict, report: dict, pairs: list[Pair], judge, defaults,
                     zeroft_seconds: float, device: str) -> None:
    """The fine-tuning row when ``--work`` holds a trained base model; a grown build's base is the grown starting
    point, not a text-to-image model, so the report says why the row is missing."""
    work = Path(options.work)
    base, base_done = work / "base" / "base", work / "base" / "done.json"
    grown_from = json.loads(base_done.read_text()).get("grown_from") if base_done.is_file() else None
    if grown_from:  # toyworld/grow.py
        report["finetune_skipped"] = (f"{work} was grown from {grown_from}: it has no trained base model to fine-tune "
                                      "per object, so the fine-tuning baseline is that build's")
    elif base.is_dir():
        row = finetune_row(base, pairs, judge, options.finetune_objects, options.finetune_steps,
                           defaults.text_guidance, defaults.steps, options.seed, device)
        row["notes"] = (f"{row['fine_tuning_steps']} steps, {row['seconds_per_object']:.1f} s/object, "
                        f"{row['seconds_per_object'] / zeroft_seconds:,.0f}x zeroft's time")
        rows[f"per-object fine-tuning ({options.finetune_objects} objects)"] = row


def ablation_rows(work: Path, judge, pairs: list[Pair], defaults, device: str) -> dict[str, dict]:
    """One row per variant that ``python -m toyworld ablations`` trained in ``work``, at the checkpoint's defaults."""
    path = work / "ablations" / "ablations.json"
    rows = {}
    for name, info in (json.loads(path.read_text()) if path.is_file() else {}).items():
        variant = ZeroFTPipeline.from_pretrained(info["checkpoint"], device=device)
        row, _ = evaluate(variant, judge, pairs, defaults.text_guidance, defaults.object_guidance, defaults.steps)
        row["notes"] = f"ablation: {info['steps']} steps, {info['train_seconds'] / 60:.0f} min"
        rows[f"ablation: {name}"] = row
    return rows


def sample_grid(pipe, pairs: list[Pair], prompts, defaults, path: Path) -> None:
    """One row per pair: its reference, then one generation per prompt (fixed seeds)."""
    rows = []
    for pair in pairs:
        out = pipe(prompts, image_embeds=pipe.encode_object(pair.reference)[0], num_inference_steps=defaults.steps,
                   generator=[torch.Generator().manual_seed(1000 + i) for i in range(len(prompts))],
                   guidance_interval=EVALUATED_INTERVAL)
        rows.append([pair.reference] + out.images)
    make_grid(rows, 96).save(path)


def one_pair_per_identity(pairs: list[Pair]) -> list[Pair]:
    """The first pair of each identity, shapes taken in turn (so a few rows show every shape)."""
    by_identity = {}
    for pair in pairs:
        by_identity.setdefault(pair.identity, pair)
    return shapes_in_turn(list(by_identity.values()), lambda pair: pair.identity.shape)


def table(rows: dict[str, dict], chance: dict[str, float]) -> str:
    lines = ["| row | pairs | identity | text | both | position copy | rotation copy | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        cells = [f"{r[m]:.3f}" if m in r else "–" for m in METRICS]
        lines.append(f"| {name} | {r['pairs']} | " + " | ".join(cells) + f" | {r.get('notes', '')} |")
    lines.append("| chance | – | " + " | ".join(f"{chance[m]:.3f}" for m in METRICS) + " | |")
    return "\n".join(lines)


def evaluate_checkpoint(options: EvalOptions) -> dict:
    """The whole evaluation (or with ``curve_only``, only the curve); writes ``toyworld_eval.json`` and figures to
    ``options.out`` and returns the report."""
    # 1. The checkpoint at the defaults it is scored at, and the judge
    device = str(build_device(options.device))
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(options.work)
    train_ids, held_out = split_identities()
    held_out, training = held_out[:options.identities], train_ids[::6][:options.identities]
    judge = load_judge(options.judge)
    pipe, defaults = scored_pipeline(options.checkpoint, options.defaults_from, device)
    report = report_header(options, device, pipe, defaults)
    ablation_pairs = make_pairs(held_out, options.ablation_references, options.seed + 700)  # also the curve's pairs
    if options.curve_only:
        return curve_only(options, pipe, judge, ablation_pairs, defaults, report, out)

    # 2. The table's rows
    pairs = make_pairs(held_out, options.references, options.seed + 500)
    rows = zeroft_rows(pipe, judge, pairs, make_pairs(training, 1, options.seed + 600), defaults)
    zeroft_seconds = encoding_seconds(pipe, pairs[0].reference)
    rows["zeroft"]["notes"] = f"personalisation {zeroft_seconds * 1000:.1f} ms/object (mask + encode)"
    add_finetune_row(options, rows, report, pairs, judge, defaults, zeroft_seconds, device)
    rows.update(ablation_rows(work, judge, ablation_pairs, defaults, device))

    # 3. Sample grid, then the curve (it leaves ``pipe`` holding the last training state)
    sample_grid(pipe, one_pair_per_identity(pairs)[:6], SAMPLE_PROMPTS, defaults, out / "samples.png")
    chance = {**CHANCE, "position_copy": position_copy_chance()}
    report.update(chance=chance, rows=rows)
    if options.curve:
        report["curve"] = curve(pipe, work / "zeroft", judge, ablation_pairs, defaults, options.curve_points)
        plot(report["curve"], out / "curve.png")

    # 4. The report
    (out / "toyworld_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows, chance))
    return report
