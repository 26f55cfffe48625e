"""``python -m toyworld interval``: three-branch guidance only on an interval of noise levels, against guidance at
every step, on the shipped model at its defaults (zeroft.guidance; Kynkäänniemi et al. 2024).

The toy model's schedule is Stable Diffusion's (1,000 scaled-linear training steps, β 0.00085 to 0.012), so an
interval of σ means there what it means on SD and SD-XL, and the paper's SD-XL interval (0.28, 5.42] applies
unchanged. Rows: off (every step), a wider interval, the paper's, and a narrow one; on the 20-step trailing DDIM
schedule the shipped model samples with they hold 85 %, 75 % and 50 % of the steps (f), which costs (1 + 2f)/2 of
ordinary two-branch guidance: 1.35x, 1.25x, 1.0x (off: 1.5x). Each row is scored on the main evaluation's 288
held-out pairs (masked references, the 216 conflict pairs among them) by toyworld.experiments.conflicts, the
seconds per image timed in one process, one row after another. Each scored row is written at once, so a stopped run
resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from zeroft import ZeroFTPipeline
from zeroft.config import ZeroFTConfig
from zeroft.guidance import PAPER_SDXL_INTERVAL, guided_share

from ..evaluate import generate, load_judge, make_pairs
from ..world import split_identities
from .conflicts import _cell, conflict_score

INTERVALS = {"off": None, "wide": (0.15, 7.0), "paper SD-XL": PAPER_SDXL_INTERVAL, "narrow": (0.40, 2.50)}
RESULTS = "interval_eval.json"
METRICS = (("identity", "identity"), ("text", "text"), ("text on conflicts", "text_on_conflicts"),
           ("background copy", "background_copy"))


def within_one_se(row: dict, off: dict, metric: str) -> bool:
    """The row's ``metric`` is within one standard error (the full-guidance row's) of full guidance."""
    return abs(row[metric] - off[metric]) <= off[f"{metric}_se"]


def run_interval(checkpoint: Path, judge_path: Path, out: Path, references: int = 3, seed: int = 0,
                 identities: int | None = None, intervals: dict = INTERVALS) -> dict:
    """Score every row of ``intervals`` (see the module docstring); returns the record written to
    ``out``/interval_eval.json, with the table (table.md) beside it."""
    config = ZeroFTConfig.load(checkpoint)
    d = config.defaults
    pipe = ZeroFTPipeline.from_pretrained(checkpoint, device="cpu")
    pipe.set_encoder_views(config.encoder.views)
    judge = load_judge(judge_path)
    _, held_out = split_identities()
    pairs = make_pairs(held_out[:identities] if identities else held_out, references, seed + 500)
    results = out / RESULTS
    record = json.loads(results.read_text()) if results.is_file() else {"rows": {}}
    if record.get("pairs", len(pairs)) != len(pairs):
        record["rows"] = {}  # scored on other pairs: start again
    record.update({"checkpoint": str(checkpoint), "pairs": len(pairs),
                   "guidance": {"text": d.text_guidance, "object": d.object_guidance}, "sampler_steps": d.steps,
                   "scheduler": type(pipe.scheduler).__name__})
    if any(name not in record["rows"] for name in intervals):
        generate(pipe, pairs[:2], d.text_guidance, d.object_guidance, d.steps)  # warm-up: no row pays for the first call
    for name, interval in intervals.items():
        if name in record["rows"]:
            continue
        f = guided_share(pipe.scheduler, d.steps, d.text_guidance, d.object_guidance, interval)
        started = time.perf_counter()
        images = generate(pipe, pairs, d.text_guidance, d.object_guidance, d.steps, guidance_interval=interval or "off")
        seconds = (time.perf_counter() - started) / len(pairs)
        record["rows"][name] = {"interval": list(interval) if interval else None, "fraction_inside": f,
                                "cost_of_two_branch_guidance": (1 + 2 * f) / 2, **conflict_score(judge, images, pairs),
                                "seconds_per_image": round(seconds, 4)}
        out.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(record, indent=2) + "\n")
    (out / "table.md").write_text(interval_table(record) + "\n")
    return record


def interval_table(record: dict) -> str:
    """The markdown table: each row's interval, share of steps guided, expected cost, metrics ± s.e., seconds per
    image, and whether identity and text stay within one s.e. of full guidance."""
    rows, off = record["rows"], record["rows"].get("off")
    lines = ["| guidance | σ interval | steps guided (f) | cost ÷ two-branch | " + " | ".join(l for l, _ in METRICS)
             + " | s / image | identity and text within 1 s.e. of off |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- | --- |"]
    for name, row in rows.items():
        interval = "every step" if row["interval"] is None else f"({row['interval'][0]:g}, {row['interval'][1]:g}]"
        verdict = "–" if off is None or row is off else (
            "yes" if within_one_se(row, off, "identity") and within_one_se(row, off, "text") else "no")
        lines.append(f"| {name} | {interval} | {row['fraction_inside']:.2f} | {row['cost_of_two_branch_guidance']:.2f}× | "
                     + " | ".join(_cell(row, m) for _, m in METRICS) + f" | {row['seconds_per_image']:.3f} | {verdict} |")
    return "\n".join(lines)
