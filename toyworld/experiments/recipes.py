"""``python -m toyworld recipes``: what the paper's recipe buys over IP-Adapter's, at one equal budget.

Five variants train the zeroft stage from the same base model, with the same steps, batch and seed
(``VARIANTS``); ``toyworld.experiments.conflicts`` then scores them on the same held-out pairs, with masked and
unmasked references, against the text-only row and the generator's own ceiling.

The parts the variants share come from the shipped checkpoint where the build made them once:
its VAE and object encoder (build stages 1 and 2, frozen in every later stage) and the shipped
judge. The base text-to-image model is trained here, ``--base-steps`` steps of build stage 4 on
that VAE, because the shipped checkpoint holds only the UNet after zeroft training. Every variant
then starts from that one base (``toyworld.experiments.ablations.run_ablations``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from ..budget import Budget
from ..build import copy_shipped_judge, pretrain, start_run, write_training_streams
from .ablations import run_ablations

# Overrides of the paper's recipe (budget.with_overrides), in the order of the report's table.
VARIANTS = {
    # IP-Adapter's trainer: the condition is the target image itself (ω = 0), unmasked, general-domain images
    # conditioned on their own photo, only the adapter trained.
    "ip_adapter_recipe": {"cross_reference": 0.0, "mask_condition": False, "drop_general_object": False,
                          "train": "adapter"},
    "paper_recipe": {},  # r = 0.3, ω = 0.5, ϕ for general images, masked condition, whole network
    "paper_no_cross_reference": {"cross_reference": 0.0},
    "paper_no_mask": {"mask_condition": False},
    "paper_adapter_only": {"train": "adapter"},
}
FOLDER = "recipes"


def _fp32_copy(source: Path, target: Path) -> None:
    """``source`` folder copied to ``target`` with every safetensors file in float32 (the shipped files are fp16)."""
    shutil.copytree(source, target)
    for path in target.rglob("*.safetensors"):
        save_file({k: v.float().contiguous() for k, v in load_file(str(path)).items()}, str(path))


def shared_parts(checkpoint: Path, work: Path, judge: Path) -> None:
    """The build's VAE and object encoder in ``work``, taken from ``checkpoint``, and the judge in the folder
    ``judge``, each stage marked finished so that ``build.pretrain`` keeps it (done once)."""
    vae_done, encoder_done = work / "vae" / "done.json", work / "encoder" / "done.json"
    if not vae_done.is_file():
        shutil.rmtree(work / "vae", ignore_errors=True)
        vae = AutoencoderKL.from_pretrained(checkpoint / "base" / "vae", torch_dtype=torch.float32)
        vae.save_pretrained(work / "vae" / "vae", safe_serialization=True)
        vae_done.write_text(json.dumps({"latent_size": 16, "copied_from": str(checkpoint / "base" / "vae")}) + "\n")
    if not encoder_done.is_file():
        shutil.rmtree(work / "encoder", ignore_errors=True)
        _fp32_copy(checkpoint / "encoder", work / "encoder" / "encoder")
        encoder_done.write_text(json.dumps({"copied_from": str(checkpoint / "encoder")}) + "\n")
    copy_shipped_judge(judge, work / "judge")


def train_recipes(work: Path, checkpoint: Path, judge: Path, base_steps: int, steps: int, seed: int = 0,
                  only: list[str] | None = None, variants: dict[str, dict] = VARIANTS, folder: str = FOLDER) -> dict:
    """The shared parts (``judge``: the folder of the judge the build shipped), a base of ``base_steps``, the two
    streams, then every variant of ``variants`` at ``steps``; returns the variants' record
    (``work``/``folder``/ablations.json) with the base's own record beside it. Everything runs on the CPU (the
    build's ``--device cpu``). Other experiments (toyworld.experiments.tokens) train their variants from the same
    base in a folder of their own."""
    shared_parts(checkpoint, work, judge)
    run = start_run(work, Path("assets"), replace(Budget(), base=base_steps), seed, "cpu", 0)
    pretrain(run, None)
    write_training_streams(run)
    report = run_ablations(work, steps, seed, only, variants, folder)
    return {"base": json.loads((work / "base" / "done.json").read_text()), "variants": report}
