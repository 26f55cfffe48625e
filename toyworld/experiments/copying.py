"""``python -m toyworld copying``: does IP-Adapter's data recipe teach a strong model to copy its reference, and do
the paper's regularizers prevent it?

Every arm continues the shipped ``zeroft-toy`` (26,000 steps of the paper's recipe; it already takes a great
deal from the photo) for the same further steps, at the shipped batch, learning rate, EMA, streams and seed,
training the same parameters (the whole network): only the data recipe differs (:data:`ARMS`). The starting
point is scored once (step 0); each arm's saved training states (every ``score_every`` steps) are scored by
toyworld.experiments.conflicts on the same held-out pairs, references masked and unmasked, each state beside its own
ceiling (the same weights with no photo, the identity told in words).

Everything is resumable: training resumes from the arm's newest saved state (train.train), and each scored
point is written to ``copying_eval.json`` as soon as it is scored, so a run that was stopped picks up where it
stopped. ``--arms`` picks and orders the arms (the two required ones first by default).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageDraw

from train.checkpointing import list_checkpoints
from train.train import run as train_run
from zeroft import ZeroFTPipeline
from zeroft.config import ZeroFTConfig

from ..budget import Budget, train_config, with_overrides
from ..build import start_run, trained_steps, write_training_streams, zeroft_resume
from ..curve import load_training_state
from ..evaluate import load_judge, make_pairs
from ..world import split_identities
from .conflicts import _chance, conflicts, variant_rows
from .recipes import _fp32_copy, shared_parts

# Overrides of the paper's recipe (budget.with_overrides); every arm trains the whole network, as the shipped model did.
ARMS = {
    # IP-Adapter's data recipe: the photo unmasked and conditioned on itself (no cross-reference), general-domain
    # images conditioned on their own photo (no dropping to the null object).
    "ip_adapter_data": {"cross_reference": 0.0, "mask_condition": False, "drop_general_object": False},
    "paper_recipe": {},  # the control: r = 0.3, ω = 0.5, ϕ for general images, masked condition
    "paper_no_mask": {"mask_condition": False},
    "paper_no_cross_reference": {"cross_reference": 0.0},
}
FOLDER = "copying"
START = "start"  # the step-0 point every arm shares
RESULTS = "copying_eval.json"


def prepare(checkpoint: Path, work: Path, judge_folder: Path, budget: Budget, seed: int) -> Path:
    """Everything the arms share, made once in ``work``: the VAE, object encoder and judge (toyworld.experiments.recipes), the
    starting point (:func:`prepare_start`) and the training streams at ``budget``'s size; returns the start."""
    shared_parts(checkpoint, work, judge_folder)
    start = prepare_start(checkpoint, work)
    write_training_streams(start_run(work, Path("assets"), budget, seed, "cpu", 0))
    return start


def prepare_start(checkpoint: Path, work: Path) -> Path:
    """``work``/start: the shipped checkpoint in float32 (what every arm starts from and step 0 is scored on), and
    ``work``/base/base: its base with its UNet as a whole diffusers folder, which train.train loads the text
    encoder, tokenizer, VAE and scheduler from (the UNet itself comes from ``--init``). Done once."""
    start = work / START
    if not (start / "zeroft_config.json").is_file():
        shutil.rmtree(start, ignore_errors=True)
        _fp32_copy(checkpoint, start)
    base = work / "base" / "base"
    if not (work / "base" / "done.json").is_file():
        shutil.rmtree(work / "base", ignore_errors=True)
        shutil.copytree(start / ZeroFTConfig.load(start).base_model, base)
        shutil.copytree(start / "unet", base / "unet")
        index = json.loads((base / "model_index.json").read_text())
        index["unet"] = ["diffusers", "UNet2DConditionModel"]
        (base / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (work / "base" / "done.json").write_text(json.dumps({"copied_from": str(checkpoint)}) + "\n")
    return start


def train_arm(work: Path, start: Path, name: str, steps: int, score_every: int, seed: int,
              budget: Budget = Budget()) -> Path:
    """Continue ``start`` under arm ``name`` for ``steps`` steps at ``budget``'s batch and learning rate (the
    shipped ones by default), saving a state every ``score_every``; returns the arm's output folder (its states, and
    its export in ``final``). Resumes a stopped run."""
    output = work / FOLDER / name
    budget = replace(budget, zeroft=steps, checkpoint_every=score_every)
    if trained_steps(output / "final") != steps:
        examples = sorted((Path("assets") / "examples").glob("object-*.png"))[:2]
        config = train_config(work, budget, seed, [str(p) for p in examples], output,
                              resume=zeroft_resume(output, steps), init=start)
        train_run(with_overrides(config, ARMS[name]))
    return output


def _load(results: Path) -> dict:
    return json.loads(results.read_text()) if results.is_file() else {"points": {}}


def _save(results: Path, record: dict) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2) + "\n")


def score_point(pipe, judge, pairs, defaults, label: str) -> dict:
    """One point: masked and unmasked references at ``defaults`` and the ceiling (conflicts.variant_rows),
    keyed "masked", "unmasked", "ceiling", with the seconds it took."""
    started = time.perf_counter()
    rows = variant_rows(label, pipe, judge, pairs, defaults)
    point = {kind: rows[f"{label}, {kind}"] for kind in ("masked", "unmasked", "ceiling")}
    point["score_seconds"] = round(time.perf_counter() - started, 1)
    return point


def run_copying(work: Path, checkpoint: Path, judge_path: Path, out: Path, arms: list[str], steps: int,
                score_every: int, references: int = 3, seed: int = 0, budget: Budget = Budget()) -> dict:
    """Train and score every arm of ``arms`` in turn (see the module docstring); returns the record written to
    ``out``/copying_eval.json, with the table (table.md) and the figure (copying.png) beside it. ``budget``: the
    streams' size and the batch and learning rate (the shipped build's by default; smaller in tests)."""
    start = prepare(checkpoint, work, judge_path.parent, budget, seed)
    chosen = ZeroFTConfig.load(checkpoint)
    defaults = chosen.defaults
    judge = load_judge(judge_path)
    _, held_out = split_identities()
    pairs = make_pairs(held_out, references, seed + 500)  # the main evaluation's 288 pairs
    results = out / RESULTS
    record = _load(results)
    record.update({"checkpoint": str(checkpoint), "pairs": len(pairs),
                   "conflict_pairs": int(sum(conflicts(p) for p in pairs)), "chance": _chance(),
                   "guidance": {"text": defaults.text_guidance, "object": defaults.object_guidance},
                   "sampler_steps": defaults.steps, "views": chosen.encoder.views,
                   "score_every": score_every})
    # every arm run so far, in ARMS order: one command per arm adds its arm to the table, it does not drop the others
    record["arms"] = {name: ARMS[name] for name in ARMS if name in arms or name in record["points"]}
    pipe = ZeroFTPipeline.from_pretrained(start, device="cpu")
    pipe.set_encoder_views(chosen.encoder.views)
    if "0" not in record["points"].get(START, {}):
        record["points"].setdefault(START, {})["0"] = score_point(pipe, judge, pairs, defaults, "start")
        _save(results, record)
    for name in arms:
        output = train_arm(work, start, name, steps, score_every, seed, budget)
        training = ZeroFTConfig.load(output / "final").training
        # what training took, from the export (a resumed run's own wall time would leave out the earlier sittings)
        record.setdefault("training", {})[name] = {
            "steps": steps, "batch": training["batch_size"], "samples_per_second": training["samples_per_second"],
            "training_seconds": round(steps * training["batch_size"] / training["samples_per_second"], 1)}
        done = record["points"].setdefault(name, {})
        for step, state in list_checkpoints(output):
            if step > steps or str(step) in done:
                continue
            load_training_state(pipe, state)
            done[str(step)] = score_point(pipe, judge, pairs, defaults, f"{name} {step}")
            _save(results, record)
            print(steps_table(record), flush=True)
        _save(results, record)
    (out / "table.md").write_text(steps_table(record) + "\n")
    plot_curves(record, out / "copying.png")
    return record


# ---------------------------------------------------------------------------------------------- table and figure

COLUMNS = (("identity", "identity"), ("text on conflicts", "text_on_conflicts"), ("background copy", "background_copy"),
           ("position copy", "position_copy"))
COLOURS = {"ip_adapter_data": (200, 30, 30), "paper_recipe": (30, 90, 200), "paper_no_mask": (230, 140, 20),
           "paper_no_cross_reference": (40, 150, 60)}


def curve_points(record: dict, name: str) -> list[tuple[int, dict]]:
    """(step, point) of arm ``name`` in step order, the shared start first."""
    points = [(0, record["points"][START]["0"])] if "0" in record["points"].get(START, {}) else []
    return points + sorted((int(step), point) for step, point in record["points"].get(name, {}).items())


def _cell(row: dict, metric: str) -> str:
    se = row.get(f"{metric}_se")
    return f"{row[metric]:.3f} ± {se:.3f}" if se is not None else f"{row[metric]:.3f}"


def steps_table(record: dict) -> str:
    """The markdown table: every arm at every scored step, masked and unmasked references, ± standard errors."""
    lines = ["| arm | step | reference | " + " | ".join(label for label, _ in COLUMNS) + " | identity ÷ ceiling |",
             "| --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " | --- |"]
    for name in record.get("arms", ARMS):
        for step, point in curve_points(record, name):
            label = "start (shipped)" if step == 0 else name.replace("_", " ")
            if step == 0 and name != next(iter(record.get("arms", ARMS))):
                continue  # the shared start once, before the first arm
            for kind in ("masked", "unmasked"):
                row = point[kind]
                fraction = row.get("identity_of_ceiling")
                cells = [_cell(row, metric) for _, metric in COLUMNS] + [f"{fraction:.2f}" if fraction else "–"]
                lines.append(f"| {label} | {step:,} | {kind} | " + " | ".join(cells) + " |")
    chance = record.get("chance", {})
    if chance:
        lines.append("| chance | – | – | " + " | ".join(f"{chance[m]:.3f}" for _, m in COLUMNS) + " | – |")
    return "\n".join(lines)


def plot_curves(record: dict, path: Path, panel: tuple[int, int] = (420, 260), margin: int = 44) -> None:
    """Background copy and text on conflicts against training steps, one line per arm; unmasked references on
    the left, masked on the right (PIL, no plotting library)."""
    metrics = (("background_copy", "background copy (chance 0.25)"), ("text_on_conflicts", "text on conflicts"))
    width, height = 2 * panel[0], 2 * panel[1] + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    arms = [name for name in record.get("arms", ARMS) if record["points"].get(name)]
    last = max([step for name in arms for step, _ in curve_points(record, name)] or [1]) or 1
    for row, (metric, title) in enumerate(metrics):
        for column, kind in enumerate(("unmasked", "masked")):
            left, top = column * panel[0], 40 + row * panel[1]
            x = lambda step: left + margin + (panel[0] - margin - 12) * step / last  # noqa: E731
            y = lambda value: top + panel[1] - margin + (2 * margin - panel[1]) * value  # noqa: E731
            draw.line([(x(0), y(1)), (x(0), y(0)), (x(last), y(0))], fill="black")
            for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
                draw.line([(x(0) - 3, y(tick)), (x(last), y(tick))], fill=(225, 225, 225))
                draw.text((left + 6, y(tick) - 6), f"{tick:.2f}", fill="black")
            for step in sorted({s for name in arms for s, _ in curve_points(record, name)}):
                draw.text((x(step) - 10, y(0) + 6), f"{step:,}", fill="black")
            draw.text((left + margin, top + 4), f"{title}, references {kind}", fill="black")
            for name in arms:
                line = [(x(step), y(point[kind][metric])) for step, point in curve_points(record, name)]
                if len(line) > 1:
                    draw.line(line, fill=COLOURS.get(name, (90, 90, 90)), width=2)
                for cx, cy in line:
                    draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=COLOURS.get(name, (90, 90, 90)))
    for k, name in enumerate(arms):
        draw.text((10 + 200 * k, 8), name.replace("_", " "), fill=COLOURS.get(name, (90, 90, 90)))
    draw.text((10, 22), "x: further training steps from the shipped zeroft-toy (26,000 steps of the paper's recipe)",
              fill=(90, 90, 90))
    image.save(path)
