"""Rendered scenes as tensors, and the two training streams written to disk for train.train.

``Scenes(seed, identities)[i]`` renders scene i deterministically: the pretraining stages
(VAE, encoder, judge, base model) read it directly; ``write_streams`` writes the general-domain
and domain-specific streams in the JSON-lines layout train.train reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .runtime import prefetch
from .world import (BACKGROUNDS, COLOURS, COUNTS, PATTERNS, SHAPES, Context, Identity, context_caption, general_caption,
                    position_bin, random_pose, render, rotation_bin, sample_scene)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def labels(identity: Identity, context: Context, pose) -> dict[str, int]:
    return {
        "shape": SHAPES.index(identity.shape), "colour": list(COLOURS).index(identity.colour),
        "pattern": PATTERNS.index(identity.pattern), "background": list(BACKGROUNDS).index(context.background),
        "count": COUNTS.index(context.count), "position": position_bin(pose),
        "rotation": rotation_bin(identity.shape, pose.rotation),
    }


class Scenes(torch.utils.data.Dataset):
    """Scene i: a random identity from ``identities`` in a random context and pose, seeded by (seed, i)."""

    def __init__(self, seed: int, identities: list[Identity], length: int = 2**31):
        self.seed, self.identities, self.length = seed, identities, length

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int):
        rng = np.random.default_rng([self.seed, int(index)])
        identity, context, pose = sample_scene(rng, self.identities)
        image, mask = render(identity, context, pose)
        return identity, context, pose, image, mask

    def __getitem__(self, index: int) -> dict:
        identity, context, pose, image, mask = self.scene(index)
        return {"pixels": to_tensor(image), "mask": torch.from_numpy(np.asarray(mask, np.float32) / 255.0),
                "caption": general_caption(identity, context), "identity": identity.words,
                "labels": labels(identity, context, pose), "image": image}


def collate_scenes(samples: list[dict]) -> dict:
    return {
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "identity": [s["identity"] for s in samples],
        "labels": {k: torch.tensor([s["labels"][k] for s in samples]) for k in samples[0]["labels"]},
        "image": [s["image"] for s in samples],
    }


class _GeneralWriter:
    """Renders and saves general-stream scene ``index``; returns its row (picklable, for a process pool)."""

    def __init__(self, folder: Path, identities: list[Identity], seed: int):
        self.folder, self.scenes = folder, Scenes(seed, identities)

    def __call__(self, index: int) -> dict:
        identity, context, pose, image, _ = self.scenes.scene(index)
        image.save(self.folder / f"{index:06d}.png")
        return {"image": f"{index:06d}.png", "caption": general_caption(identity, context), "identity": identity.name}


def write_streams(folder: Path, identities: list[Identity], general: int, per_identity: int, seed: int,
                  workers: int = 0) -> None:
    """Write ``general/data.jsonl`` (image, caption; identity for audits) and ``domain/data.jsonl`` (image, caption, identity, mask).

    ``workers`` > 0 renders the general stream in that many processes: the same files and rows (each scene
    depends only on its index), in a fraction of the time beside a GPU."""
    general_dir, domain_dir = folder / "general", folder / "domain"
    general_dir.mkdir(parents=True, exist_ok=True)
    domain_dir.mkdir(parents=True, exist_ok=True)
    rows = list(tqdm(prefetch(_GeneralWriter(general_dir, identities, seed), 0, general, workers), total=general,
                     desc="general stream", leave=False))
    (general_dir / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = []
    rng = np.random.default_rng([seed, 1])
    for identity in tqdm(identities, desc="domain stream", leave=False):
        for k in range(per_identity):
            context = Context(list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))], COUNTS[int(rng.integers(2))])
            image, mask = render(identity, context, random_pose(rng, context.count))
            name = f"{identity.name}-{k:03d}"
            image.save(domain_dir / f"{name}.png")
            mask.save(domain_dir / f"{name}.mask.png")
            rows.append({"image": f"{name}.png", "mask": f"{name}.mask.png", "caption": context_caption(context),
                         "identity": identity.name})
    (domain_dir / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
