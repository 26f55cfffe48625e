"""Accuracy against training steps: a build's saved training states, each scored on the same held-out pairs."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from train.checkpointing import list_checkpoints

from .evaluate import evaluate

CURVE_METRICS = ("identity", "text", "both", "shape_acc", "colour_acc", "pattern_acc")


def load_training_state(pipe, folder: Path) -> None:
    """Weights of a train.train checkpoint folder (EMA weights when the run kept them) into ``pipe``."""
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
    points = []
    saved = list_checkpoints(run)
    every = max(1, -(-len(saved) // max_points))
    for step, folder in saved[every - 1::every]:
        load_training_state(pipe, folder)
        metrics, _ = evaluate(pipe, judge, pairs, defaults.text_guidance, defaults.object_guidance, defaults.steps)
        points.append({"step": step, **{k: metrics[k] for k in CURVE_METRICS}})
        print(f"  step {step:6d}: identity {metrics['identity']:.3f} text {metrics['text']:.3f} "
              f"(shape {metrics['shape_acc']:.3f}, pattern {metrics['pattern_acc']:.3f})")
    return points


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
