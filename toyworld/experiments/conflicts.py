"""Photo against text: does a model follow the prompt when the reference photo shows another scene?

Every reference photo is a rendering of one held-out object on a background of its own
(evaluate.make_pairs); a pair **conflicts** when the prompt asks for another background. On the
same pairs, every row of ``python -m toyworld recipes`` reports, with standard errors:

- identity, text, and **text on conflicts** (text accuracy on the conflicting pairs only);
- **background copy**: on conflicting pairs, how often the output's background is the reference's
  instead of the prompt's (chance: one background in four);
- position and rotation copy, as in the main evaluation;

for references given **masked** (the checkpoint's automatic mask, the background filled gray) and
**unmasked** (the photo as is, background included, as users upload photos), beside the **text
only** row (object guidance 0) and **the generator's ceiling**: the same pipeline with no photo at
all, the identity told in words (the general-domain caption); identity as a fraction of it says how
much of what the generator can draw the object embedding gets across.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from zeroft import ZeroFTPipeline
from zeroft.config import GenerationDefaults, ZeroFTConfig
from zeroft.grid import make_grid

from ..evaluate import (CHANCE, EVALUATED_INTERVAL, Pair, generate, in_batches, judged, load_judge, make_pairs,
                        position_copy_chance, score_judged)
from ..world import BACKGROUNDS, Context, general_caption, random_pose, render, shapes_in_turn, split_identities
from .recipes import FOLDER, VARIANTS

TABLE = (("identity", "identity"), ("text", "text"), ("text on conflicts", "text_on_conflicts"),
         ("background copy", "background_copy"), ("position copy", "position_copy"), ("rotation copy", "rotation_copy"))
CONFLICT_CHANCE = {"text_on_conflicts": CHANCE["text"], "background_copy": 1 / len(BACKGROUNDS)}


def conflicts(pair: Pair) -> bool:
    """True when the prompt asks for another background than the reference photo's."""
    return pair.context.background != pair.reference_context.background


def standard_error(rate: float, n: int) -> float:
    """Standard error of a rate measured on ``n`` independent yes/no outcomes."""
    return float(np.sqrt(rate * (1 - rate) / n)) if n else float("nan")


def conflict_score(judge, images: list[Image.Image], pairs: list[Pair]) -> dict[str, float]:
    """``evaluate.score`` plus the conflict metrics, each rate with its standard error (``<name>_se``)."""
    predicted, correct = judged(judge, images, pairs)
    result = score_judged(correct, pairs)
    conflict = np.array([conflicts(p) for p in pairs])
    shown = np.array([list(BACKGROUNDS).index(p.reference_context.background) for p in pairs])
    text = correct["background"] & correct["count"]
    result["conflict_pairs"] = int(conflict.sum())
    if conflict.any():
        result["text_on_conflicts"] = float(text[conflict].mean())
        result["background_copy"] = float((predicted["background"][conflict] == shown[conflict]).mean())
    single = int(sum(p.context.count == "one" for p in pairs))
    sizes = {"identity": len(pairs), "text": len(pairs), "both": len(pairs), "text_on_conflicts": int(conflict.sum()),
             "background_copy": int(conflict.sum()), "position_copy": single, "rotation_copy": single}
    for name, n in sizes.items():
        if name in result:
            result[f"{name}_se"] = standard_error(result[name], n)
    return result


def generate_ceiling(pipe, pairs: list[Pair], text_guidance: float, steps: int, batch_size: int = 48) -> list[Image.Image]:
    """The generator's ceiling: for each pair, no photo at all, the prompt telling the identity in words (the
    general-domain caption of the pair's identity in the pair's context), the pair's own seed."""
    return in_batches(pipe, pairs, lambda chunk, generators: pipe(
        [general_caption(p.identity, p.context) for p in chunk], text_guidance=text_guidance,
        num_inference_steps=steps, generator=generators, guidance_interval=EVALUATED_INTERVAL), batch_size)


def _timed(function, pairs: list[Pair]) -> tuple[list[Image.Image], float]:
    started = time.perf_counter()
    images = function()
    return images, round((time.perf_counter() - started) / len(pairs), 4)


def variant_rows(name: str, pipe, judge, pairs: list[Pair], defaults: GenerationDefaults) -> dict[str, dict]:
    """One variant's rows: masked and unmasked references at ``defaults``, and its own ceiling."""
    rows = {}
    for masked in (True, False):
        images, seconds = _timed(lambda: generate(pipe, pairs, defaults.text_guidance, defaults.object_guidance,
                                                  defaults.steps, masked=masked), pairs)
        rows[f"{name}, {'masked' if masked else 'unmasked'}"] = {**conflict_score(judge, images, pairs),
                                                                 "seconds_per_image": seconds}
    images, seconds = _timed(lambda: generate_ceiling(pipe, pairs, defaults.text_guidance, defaults.steps), pairs)
    rows[f"{name}, ceiling"] = {**conflict_score(judge, images, pairs), "seconds_per_image": seconds}
    for masked in ("masked", "unmasked"):
        ceiling = rows[f"{name}, ceiling"]["identity"]
        rows[f"{name}, {masked}"]["identity_of_ceiling"] = rows[f"{name}, {masked}"]["identity"] / ceiling if ceiling else None
    return rows


def conflict_references(identities, background: str, count: int, seed: int) -> list[Pair]:
    """``count`` held-out objects (shapes in turn), each photographed alone on ``background``, paired with every
    prompt that asks for one object on another background: the figure's conflicts."""
    rng = np.random.default_rng([seed, 29])
    pairs = []
    for identity in shapes_in_turn(identities)[:count]:
        shown = Context(background, "one")
        pose = random_pose(rng, "one")
        image, _ = render(identity, shown, pose)
        for other in BACKGROUNDS:
            if other != background:
                pairs.append(Pair(image, identity, shown, pose, Context(other, "one"), int(rng.integers(2**31))))
    return pairs


def figure_block(outputs: dict[str, list[Image.Image]], pairs: list[Pair], title: str, cell: int = 64) -> Image.Image:
    """Rows: the references; columns: the reference, then each variant's outputs under the conflicting prompts;
    a header names the variants, the prompts' backgrounds and ``title``."""
    per_row = sum(p.reference is pairs[0].reference for p in pairs)
    rows = []
    for start in range(0, len(pairs), per_row):
        rows.append([pairs[start].reference] + [image for images in outputs.values() for image in images[start:start + per_row]])
    grid = make_grid(rows, cell)
    header = Image.new("RGB", (grid.width, 42), (255, 255, 255))
    draw, lines = ImageDraw.Draw(header), ImageDraw.Draw(grid)
    draw.text((2, 1), title, fill=(0, 0, 0))
    draw.text((2, 27), "reference", fill=(0, 0, 0))
    for k, name in enumerate(outputs):
        x = cell * (1 + k * per_row)
        draw.text((x + 2, 14), name.replace("_", " "), fill=(0, 0, 0))
        draw.text((x + 2, 27), " | ".join(p.context.background for p in pairs[:per_row]), fill=(90, 90, 90))
        draw.line([(x, 13), (x, header.height)], fill=(0, 0, 0))
        lines.line([(x, 0), (x, grid.height)], fill=(0, 0, 0), width=1)
    block = Image.new("RGB", (grid.width, grid.height + header.height), (255, 255, 255))
    block.paste(header, (0, 0))
    block.paste(grid, (0, header.height))
    return block


def stack(blocks: list[Image.Image], gap: int = 8) -> Image.Image:
    """``blocks`` one above the other, ``gap`` pixels apart."""
    canvas = Image.new("RGB", (max(b.width for b in blocks), sum(b.height for b in blocks) + gap * (len(blocks) - 1)),
                       (255, 255, 255))
    y = 0
    for block in blocks:
        canvas.paste(block, (0, y))
        y += block.height + gap
    return canvas


def _cell(row: dict, metric: str) -> str:
    if metric not in row:
        return "–"
    se = row.get(f"{metric}_se")
    return f"{row[metric]:.3f} ± {se:.3f}" if se is not None else f"{row[metric]:.3f}"


def table(rows: dict[str, dict], chance: dict[str, float]) -> str:
    """The markdown table: every row ± its standard errors, then chance."""
    lines = ["| row | pairs | " + " | ".join(label for label, _ in TABLE) + " | identity ÷ ceiling |",
             "| --- | --- | " + " | ".join("---" for _ in TABLE) + " | --- |"]
    for name, row in rows.items():
        fraction = row.get("identity_of_ceiling")
        cells = [_cell(row, metric) for _, metric in TABLE] + [f"{fraction:.2f}" if fraction is not None else "–"]
        lines.append(f"| {name} | {row['pairs']} | " + " | ".join(cells) + " |")
    lines.append("| chance | – | " + " | ".join(f"{chance[m]:.3f}" for _, m in TABLE) + " | – |")
    return "\n".join(lines)


def evaluate_recipes(work: Path, judge_path: Path, defaults_from: Path, out: Path, references: int = 3,
                     seed: int = 0, figure_background: str = "white", figure_objects: int = 4,
                     variants: dict[str, dict] = VARIANTS, folder: str = FOLDER) -> dict:
    """Score every variant of ``variants`` trained in ``work``/``folder`` at ``defaults_from``'s guidance, sampler
    steps and encoder views (the shipped checkpoint's, chosen by its build on training identities: the same for
    every row, never tuned here); writes ``recipes_eval.json``, ``table.md`` and ``conflicts.png`` to ``out``;
    returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    _, held_out = split_identities()
    judge = load_judge(judge_path)
    chosen = ZeroFTConfig.load(defaults_from)
    defaults = chosen.defaults
    record = json.loads((work / folder / "ablations.json").read_text())
    pairs = make_pairs(held_out, references, seed + 500)  # the main evaluation's pairs
    figure_pairs = conflict_references(held_out, figure_background, figure_objects, seed)
    chance = _chance()
    rows, outputs = {}, {True: {}, False: {}}
    for name in variants:
        if name not in record:
            continue
        pipe = ZeroFTPipeline.from_pretrained(record[name]["checkpoint"], device="cpu")
        pipe.set_encoder_views(chosen.encoder.views)
        rows.update(variant_rows(name, pipe, judge, pairs, defaults))
        if name == "paper_recipe":
            images = generate(pipe, pairs, defaults.text_guidance, 0.0, defaults.steps)
            rows["text only (paper_recipe, w_obj = 0)"] = conflict_score(judge, images, pairs)
        for masked in outputs:
            outputs[masked][name] = generate(pipe, figure_pairs, defaults.text_guidance, defaults.object_guidance,
                                             defaults.steps, masked=masked)
        print(table({k: v for k, v in rows.items() if k.startswith(name)}, chance), flush=True)
    stack([figure_block(outputs[False], figure_pairs, "references as given (unmasked): the photo's background is in the condition"),
           figure_block(outputs[True], figure_pairs, "references masked (the checkpoint's automatic mask, gray fill)")]
          ).save(out / "conflicts.png")
    report = {"work": str(work), "defaults_from": str(defaults_from),
              "guidance": {"text": defaults.text_guidance, "object": defaults.object_guidance},
              "sampler_steps": defaults.steps, "views": chosen.encoder.views, "pairs": len(pairs),
              "conflict_pairs": int(sum(conflicts(p) for p in pairs)), "variants": record, "chance": chance,
              "rows": rows, "figure": {"background": figure_background, "objects": figure_objects,
                                       "prompts": sorted({p.prompt for p in figure_pairs}),
                                       "references": "unmasked (top), masked (bottom)"}}
    (out / "recipes_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "table.md").write_text(table(rows, chance) + "\n")
    print(table(rows, chance))
    return report


def _chance() -> dict[str, float]:
    return {**CHANCE, **CONFLICT_CHANCE, "position_copy": position_copy_chance()}
