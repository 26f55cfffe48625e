"""Judging generations in the toy world: identity kept, text followed, pose copied or not.

A pair is (reference photo of an object, context prompt); the judge (an attribute classifier
trained on renderings, toyworld.stages.train_judge) reads each generated image. Metrics:

- identity accuracy: shape, colour and pattern of the reference all recognised in the output;
- text accuracy: background and count of the prompt both recognised;
- both: the two at once, per image;
- pose copying (prompts with one object): the output's position cell (3×3) or rotation bin
  equals the reference's, against the rate of two independent renderings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from zeroft.encoder import VIEWS

from .models import HEADS, Judge
from .scenes import labels, to_tensor
from .world import (BACKGROUNDS, COLOURS, COUNTS, PATTERNS, SHAPES, Context, Identity, Pose, all_contexts,
                    context_caption, position_bin, random_pose, render)

CHANCE = {"identity": 1 / (len(SHAPES) * len(COLOURS) * len(PATTERNS)), "text": 1 / (len(BACKGROUNDS) * len(COUNTS)),
          "both": 1 / (len(SHAPES) * len(COLOURS) * len(PATTERNS) * len(BACKGROUNDS) * len(COUNTS)), "rotation_copy": 0.25}


@dataclass(frozen=True)
class Pair:
    reference: Image.Image
    identity: Identity
    reference_context: Context
    reference_pose: Pose
    context: Context
    seed: int

    @property
    def prompt(self) -> str:
        return context_caption(self.context)


def make_pairs(identities: list[Identity], references_per_identity: int, seed: int,
               contexts: list[Context] | None = None) -> list[Pair]:
    """Every identity × references × context; each reference a single object in a random context and pose."""
    rng = np.random.default_rng([seed, 11])
    pairs = []
    for identity in identities:
        for r in range(references_per_identity):
            reference_context = Context(list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))], "one")
            pose = random_pose(rng, "one")
            image, _ = render(identity, reference_context, pose)
            for context in contexts or all_contexts():
                pairs.append(Pair(image, identity, reference_context, pose, context, int(rng.integers(2**31))))
    return pairs


def position_copy_chance(seed: int = 0, trials: int = 20000) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([position_bin(random_pose(rng, "one")) == position_bin(random_pose(rng, "one"))
                          for _ in range(trials)]))


def load_judge(path) -> Judge:
    judge = Judge()
    judge.load_state_dict(load_file(str(path)))
    return judge.eval()


@torch.no_grad()
def judge_images(judge: Judge, images: list[Image.Image]) -> dict[str, np.ndarray]:
    predictions = {name: [] for name in HEADS}
    for start in range(0, len(images), 128):
        pixels = torch.stack([to_tensor(image.resize((64, 64))) for image in images[start:start + 128]])
        logits = judge(pixels)
        for name in HEADS:
            predictions[name].append(logits[name].argmax(-1).numpy())
    return {name: np.concatenate(values) for name, values in predictions.items()}


def judged(judge: Judge, images: list[Image.Image], pairs: list[Pair]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per image, what the judge read (head → class index) and whether each head matches the pair (head → bool):
    the reference's identity and pose, the prompt's background and count."""
    predicted = judge_images(judge, images)
    truth = [labels(p.identity, p.context, p.reference_pose) for p in pairs]
    return predicted, {name: predicted[name] == np.array([t[name] for t in truth]) for name in HEADS}


def score(judge: Judge, images: list[Image.Image], pairs: list[Pair]) -> dict[str, float]:
    return score_judged(judged(judge, images, pairs)[1], pairs)


def score_judged(correct: dict[str, np.ndarray], pairs: list[Pair]) -> dict[str, float]:
    """The rates of ``score`` from ``judged``'s per-image matches."""
    identity = correct["shape"] & correct["colour"] & correct["pattern"]
    text = correct["background"] & correct["count"]
    single = np.array([p.context.count == "one" for p in pairs])
    result = {
        "pairs": len(pairs),
        "identity": float(identity.mean()), "text": float(text.mean()), "both": float((identity & text).mean()),
        **{f"{name}_acc": float(correct[name].mean()) for name in ("shape", "colour", "pattern", "background", "count")},
    }
    if single.any():
        result["position_copy"] = float(correct["position"][single].mean())
        result["rotation_copy"] = float(correct["rotation"][single].mean())
    return result


def whole_photo(image: Image.Image) -> np.ndarray:
    """The mask that keeps the whole photo, background included: the reference given as is, unmasked."""
    return np.ones((image.height, image.width), np.float32)


@torch.no_grad()
def in_batches(pipe, pairs: list[Pair], call, batch_size: int = 48) -> list[Image.Image]:
    """One image per pair, ``call(chunk, generators)`` (a pipeline call) run on ``batch_size`` pairs at a time, each
    pair with a generator seeded by its own fixed seed."""
    pipe.set_progress_bar_config(disable=True)
    images = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        images += call(chunk, [torch.Generator().manual_seed(p.seed) for p in chunk]).images
    return images


# Every toy-world evaluation guides at every step, whatever the checkpoint's default: the recorded tables were
# scored so; toyworld.experiments.interval scores the intervals.
EVALUATED_INTERVAL = "off"


def generate(pipe, pairs: list[Pair], text_guidance: float, object_guidance: float, steps: int,
             batch_size: int = 48, masked: bool = True, **settings) -> list[Image.Image]:
    """One image per pair, each from its own fixed seed, batched across pairs; ``masked`` False encodes each
    reference photo as is (``whole_photo``) instead of under the checkpoint's automatic mask. ``settings``: further
    pipeline arguments; ``guidance_interval`` is "off" (guidance at every step, as every recorded toy-world table was
    scored) unless given."""
    settings.setdefault("guidance_interval", EVALUATED_INTERVAL)

    def call(chunk, generators):
        embeds = torch.cat([pipe.encode_object(p.reference, None if masked else whole_photo(p.reference))[0]
                            for p in chunk])
        return pipe([p.prompt for p in chunk], image_embeds=embeds, text_guidance=text_guidance,
                    object_guidance=object_guidance, num_inference_steps=steps, generator=generators, **settings)
    return in_batches(pipe, pairs, call, batch_size)


def evaluate(pipe, judge: Judge, pairs: list[Pair], text_guidance: float, object_guidance: float,
             steps: int) -> tuple[dict[str, float], list[Image.Image]]:
    started = time.perf_counter()
    images = generate(pipe, pairs, text_guidance, object_guidance, steps)
    result = score(judge, images, pairs)
    result["seconds_per_image"] = round((time.perf_counter() - started) / len(pairs), 4)
    return result, images


def best_setting(results: list[dict]) -> dict:
    """The sweep row with the highest 'both' score, then identity; ties go to the earlier (cheaper) row."""
    return max(results, key=lambda r: (r["both"], r["identity"]))


def choose_views(pipe, judge: Judge, pairs: list[Pair], steps: int, text_guidance: float, object_guidance: float,
                 options=tuple(VIEWS)) -> tuple[str, list[dict]]:
    """The encoder views (zeroft.encoder.VIEWS) with the highest 'both' score on ``pairs`` (training
    identities); ties go to the earlier, cheaper option. Leaves ``pipe`` on the chosen views."""
    results = []
    for views in options:
        pipe.set_encoder_views(views)
        metrics, _ = evaluate(pipe, judge, pairs, text_guidance, object_guidance, steps)
        results.append({"views": views, "text_guidance": text_guidance, "object_guidance": object_guidance, **metrics})
    best = best_setting(results)
    pipe.set_encoder_views(best["views"])
    return best["views"], results


def choose_guidance(pipe, judge: Judge, pairs: list[Pair], steps: int, grid_text=(2.0, 3.0, 5.0, 7.5),
                    grid_object=(1.5, 3.0, 5.0)) -> tuple[float, float, list[dict]]:
    """The (w_text, w_obj) with the highest 'both' score on ``pairs`` (training identities, not the test set)."""
    results = []
    for w_text in grid_text:
        for w_object in grid_object:
            metrics, _ = evaluate(pipe, judge, pairs, w_text, w_object, steps)
            results.append({"text_guidance": w_text, "object_guidance": w_object, **metrics})
    best = best_setting(results)
    return best["text_guidance"], best["object_guidance"], results
