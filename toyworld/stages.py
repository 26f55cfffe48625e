"""The pretraining stages of the toy world: VAE, object encoder (open_clip), judge, base text-to-image model.

They stand in for what the paper takes off the shelf (Imagen's VAE-free pixel model, CLIP, a
pretrained text-to-image network); each trains on renderings of TRAINING identities only (the
judge, an evaluation instrument, sees all). Every stage is resumable (runtime.Stage): its state is
saved every few minutes, and a finished stage writes ``done.json`` and is skipped on the next build.

Every stage runs on ``device`` (CPU or one CUDA GPU); its random draws come from CPU generators
seeded per step, so the data and noise a step sees do not depend on the device. With ``workers``
> 0, batches are rendered ahead in that many DataLoader processes (runtime.prefetch; on a GPU,
rendering with PIL would otherwise be the bottleneck); the batches are the same as with
``workers`` = 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from open_clip.loss import ClipLoss
from open_clip.model import CLIP
from safetensors.torch import save_file

from train.losses import diffusion_loss, step_generator
from zeroft.config import EncoderConfig
from zeroft.encoder import prepare_object_image, save_open_clip_folder

from .models import (HEADS, MAX_TOKENS, OPEN_CLIP_CONFIG, Judge, make_scheduler, make_text_encoder, make_tokenizer,
                     make_unet, make_vae)
from .runtime import Stage, prefetch
from .scenes import Scenes, collate_scenes
from .world import Identity, all_identities

ENCODER_VIEW = EncoderConfig(model_name="toyworld-clip", pretrained=None, path="encoder", background_fill="gray",
                             crop_to_object=True, crop_margin=0.1)
CLIP_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.25, 0.25, 0.25]).view(3, 1, 1)


def _batch(scenes: Scenes, step: int, size: int) -> dict:
    return collate_scenes([scenes[step * size + i] for i in range(size)])


class SceneBatch:
    """Step → the collated batch of ``size`` scenes at that step (picklable, for DataLoader workers)."""

    def __init__(self, scenes: Scenes, size: int):
        self.scenes, self.size = scenes, size

    def __call__(self, step: int) -> dict:
        return _batch(self.scenes, step, self.size)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


# ---------------------------------------------------------------------------------------------- VAE


def train_vae(folder: Path, identities: list[Identity], steps: int, seed: int, device: torch.device = torch.device("cpu"),
              workers: int = 0, latent_size: int = 16) -> dict:
    """The VAE onto ``latent_size``² latents (models.make_vae); a finished stage of another size is an error."""
    vae = make_vae(seed, latent_size).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    stage = Stage(folder, {"vae": vae}, optimizer, steps, config={"latent_size": latent_size})
    if stage.done:
        return stage.finished({"latent_size": 16}, lambda saved: (  # builds before the option had 16×16 latents
            f"{folder} holds a VAE onto {saved['latent_size']}² latents, not {latent_size}²: "
            "build this UNet variant in another --work folder"))
    batches = prefetch(SceneBatch(Scenes(seed + 1, identities), 16), stage.step, steps, workers)
    vae.train()
    for step, batch in zip(stage.steps("VAE"), batches):
        pixels = batch["pixels"].to(device)
        posterior = vae.encode(pixels).latent_dist
        generator = step_generator(seed, step, 0, 0)
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(device)
        reconstruction = vae.decode(latents).sample
        kl = posterior.kl().mean() / pixels[0].numel()
        loss = F.mse_loss(reconstruction, pixels) + 0.5 * F.l1_loss(reconstruction, pixels) + 1e-4 * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    vae.eval()
    with torch.no_grad():
        pixels = _batch(Scenes(seed + 2, identities), 0, 64)["pixels"].to(device)
        latents = vae.encode(pixels).latent_dist.mean
        error = F.mse_loss(vae.decode(latents).sample, pixels).item()
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    vae.to("cpu").save_pretrained(folder / "vae", safe_serialization=True)
    return stage.finish({"reconstruction_mse": round(error, 5), "scaling_factor": vae.config.scaling_factor})


# ---------------------------------------------------------------------------------------------- encoder


def encoder_views(batch: dict) -> torch.Tensor:
    """The frozen encoder's input for each scene: masked, cropped, 32×32 (the pipeline's own preprocessing)."""
    size = OPEN_CLIP_CONFIG["vision_cfg"]["image_size"]
    return torch.stack([prepare_object_image(image, mask.numpy(), ENCODER_VIEW, size, CLIP_MEAN, CLIP_STD)
                        for image, mask in zip(batch["image"], batch["mask"])])


def caption_tokens(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (B, MAX_TOKENS) of ``texts``, padded to the world's fixed caption length."""
    return tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids


def _open_clip_model(seed: int):
    torch.manual_seed(seed)
    config = json.loads(json.dumps(OPEN_CLIP_CONFIG))
    config["text_cfg"].update({"pool_type": "eos", "eos_id": 1, "pad_id": 1})
    return CLIP(**config), config


class EncoderBatch:
    """Step → every training identity once, each in its own random pose and context (picklable)."""

    def __init__(self, identities: list[Identity], seed: int):
        self.identities, self.seed = identities, seed

    def __call__(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, 3, step])
        scenes = collate_scenes([Scenes(int(rng.integers(2**31)), [identity])[0] for identity in self.identities])
        return {"views": encoder_views(scenes), "labels": scenes["labels"]}


def train_encoder(folder: Path, identities: list[Identity], held_out: list[Identity], steps: int, seed: int,
                  device: torch.device = torch.device("cpu"), workers: int = 0) -> dict:
    """Contrastive (open_clip ClipLoss) on the encoder's view of each object ↔ its identity words.

    Each batch holds every training identity once (random pose, context, count), so the loss is
    never asked to separate two images of the same identity. Linear probes for shape, colour
    and pattern on the image embedding add a cross-entropy term: with contrastive loss alone, a
    first build retrieved held-out identities at 0.56 top-1 (training: 0.93), because 60
    captions can be told apart without factorising them; the probes make each attribute
    linearly readable, which carries over to unseen combinations. The probes are not exported.
    """
    model, config = _open_clip_model(seed)
    width = OPEN_CLIP_CONFIG["embed_dim"]
    probes = torch.nn.ModuleDict({name: torch.nn.Linear(width, HEADS[name]) for name in ("shape", "colour", "pattern")})
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(probes.parameters()), lr=5e-4, weight_decay=0.05)
    model.to(device)
    probes.to(device)
    stage = Stage(folder, {"clip": model, "probes": probes}, optimizer, steps)
    if stage.done:
        return json.loads((folder / "done.json").read_text())
    tokenizer = make_tokenizer()
    loss_fn = ClipLoss()
    texts = caption_tokens(tokenizer, [i.words for i in identities]).to(device)
    batches = prefetch(EncoderBatch(identities, seed), stage.step, steps, workers)
    model.train()
    for _, batch in zip(stage.steps("object encoder"), batches):
        embeddings = model.encode_image(batch["views"].to(device))  # (60, D), what zeroft's adapter will read
        text_features = model.encode_text(texts, normalize=True)
        probe_loss = sum(F.cross_entropy(probe(embeddings), batch["labels"][name].to(device))
                         for name, probe in probes.items())
        loss = loss_fn(F.normalize(embeddings, dim=-1), text_features, model.logit_scale.exp()) + 0.5 * probe_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    info = {"retrieval_top1_held_out": round(encoder_retrieval(model, tokenizer, held_out, seed), 3),
            "retrieval_top1_training": round(encoder_retrieval(model, tokenizer, identities, seed), 3),
            "probe_all_attributes_held_out": round(probe_accuracy(model, probes, held_out, seed), 3)}
    save_open_clip_folder(model.to("cpu"), config, folder / "encoder", CLIP_MEAN.flatten().tolist(), CLIP_STD.flatten().tolist())
    return stage.finish(info)


@torch.no_grad()
def probe_accuracy(model, probes, identities: list[Identity], seed: int, per_identity: int = 10) -> float:
    """Fraction of renderings whose shape, colour and pattern the linear probes all read correctly."""
    device = _device_of(model)
    hits = total = 0
    for identity in identities:
        batch = collate_scenes([Scenes(seed + 8, [identity])[k] for k in range(per_identity)])
        embeddings = model.encode_image(encoder_views(batch).to(device))
        correct = torch.ones(per_identity, dtype=torch.bool, device=device)
        for name, probe in probes.items():
            correct &= probe(embeddings).argmax(-1) == batch["labels"][name].to(device)
        hits += int(correct.sum())
        total += per_identity
    return hits / total


@torch.no_grad()
def encoder_retrieval(model, tokenizer, identities: list[Identity], seed: int, per_identity: int = 10) -> float:
    """Top-1 accuracy of picking an object's identity among all 72 from its image embedding."""
    device = _device_of(model)
    everyone = all_identities()
    text = F.normalize(model.encode_text(caption_tokens(tokenizer, [i.words for i in everyone]).to(device)), dim=-1)
    hits = total = 0
    for identity in identities:
        batch = collate_scenes([Scenes(seed + 7, [identity])[k] for k in range(per_identity)])
        image = F.normalize(model.encode_image(encoder_views(batch).to(device)), dim=-1)
        hits += int(((image @ text.T).argmax(-1) == everyone.index(identity)).sum())
        total += per_identity
    return hits / total


# ---------------------------------------------------------------------------------------------- judge


def degrade(pixels: torch.Tensor, vae, generator: torch.Generator) -> torch.Tensor:
    """Half the batch through the VAE and a little noise: what generated images look like."""
    half = pixels.shape[0] // 2
    with torch.no_grad():
        roundtrip = vae.decode(vae.encode(pixels[:half]).latent_dist.mean).sample.clamp(-1, 1)
    noisy = roundtrip + 0.05 * torch.randn(roundtrip.shape, generator=generator).to(roundtrip)
    return torch.cat([noisy, pixels[half:]])


def train_judge(folder: Path, identities: list[Identity], held_out: list[Identity], vae, steps: int, seed: int,
                workers: int = 0, eval_images: int = 512) -> dict:
    """Attribute classifier on renderings of ALL identities (it is the measuring instrument); on ``vae``'s device.
    Its accuracy is recorded on ``eval_images`` held-out renderings, clean and through the VAE."""
    device = _device_of(vae)
    judge = Judge().to(device)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-3, weight_decay=1e-4)
    stage = Stage(folder, {"judge": judge}, optimizer, steps)
    if stage.done:
        return json.loads((folder / "done.json").read_text())
    batches = prefetch(SceneBatch(Scenes(seed + 4, identities + held_out), 64), stage.step, steps, workers)
    judge.train()
    for step, batch in zip(stage.steps("judge"), batches):
        pixels = degrade(batch["pixels"].to(device), vae, step_generator(seed, step, 4, 0))
        logits = judge(pixels)
        loss = sum(F.cross_entropy(logits[name], batch["labels"][name].to(device)) for name in HEADS)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    judge.eval()
    save_file({k: v.contiguous().cpu() for k, v in judge.state_dict().items()}, str(folder / "judge.safetensors"))
    return stage.finish({"accuracy_held_out_clean": judge_accuracy(judge, held_out, None, seed, eval_images),
                         "accuracy_held_out_vae": judge_accuracy(judge, held_out, vae, seed, eval_images)})


@torch.no_grad()
def judge_accuracy(judge, identities: list[Identity], vae, seed: int, count: int = 512) -> dict[str, float]:
    device = _device_of(judge)
    batch = _batch(Scenes(seed + 9, identities), 0, count)
    pixels = batch["pixels"].to(device)
    if vae is not None:
        pixels = vae.decode(vae.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
    logits = judge(pixels)
    return {name: round(float((logits[name].argmax(-1).cpu() == batch["labels"][name]).float().mean()), 4) for name in HEADS}


# ---------------------------------------------------------------------------------------------- base model


def train_base(folder: Path, identities: list[Identity], vae, steps: int, seed: int, batch_size: int = 32,
               workers: int = 0, learning_rate: float = 2e-4, unet_variant: str = "v1") -> dict:
    """The 'pretrained text-to-image model': UNet + text encoder on the general stream (v-prediction), on ``vae``'s device.

    ``unet_variant`` is one of models.UNETS; a finished stage built with another variant is an error, not reused."""
    device = _device_of(vae)
    unet = make_unet(seed, unet_variant).to(device)
    text_encoder, tokenizer = make_text_encoder(seed).to(device), make_tokenizer()
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-2)
    ema = EMAModel(parameters, decay=0.999, foreach=device.type == "cuda")  # one kernel per op, not per tensor, on a GPU
    stage = Stage(folder, {"unet": unet, "text_encoder": text_encoder, "ema": ema}, optimizer, steps,
                  config={"unet": unet_variant})
    if stage.done:
        return stage.finished({"unet": "v1"}, lambda saved: (  # builds before the option had the v1 UNet
            f"{folder} holds a base model with the {saved['unet']!r} UNet, not {unet_variant!r}: "
            "build the other variant in another --work folder"))
    ema.to(device)  # a resumed EMA state loads on the CPU
    noise_scheduler = DDPMScheduler.from_config(make_scheduler().config)
    batches = prefetch(SceneBatch(Scenes(seed + 5, identities), batch_size), stage.step, steps, workers)
    unet.train()
    text_encoder.train()
    vae.requires_grad_(False)
    for step, batch in zip(stage.steps("base text-to-image model"), batches):
        rng = np.random.default_rng([seed, 5, step])
        captions = ["" if rng.random() < 0.1 else c for c in batch["caption"]]  # for classifier-free guidance
        tokens = caption_tokens(tokenizer, captions).to(device)
        generator = step_generator(seed, step, 5, 0)
        with torch.no_grad():
            latents = vae.encode(batch["pixels"].to(device)).latent_dist.mean * vae.config.scaling_factor
        hidden = text_encoder(tokens)[0]
        loss = diffusion_loss(unet, noise_scheduler, latents, hidden, None, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(parameters)
    ema.copy_to(parameters)
    unet.eval()
    text_encoder.eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.to("cpu").save_pretrained(folder / "base", safe_serialization=True)
    vae.to(device)  # the pipeline moved the shared VAE to the CPU
    return stage.finish({"final_loss": round(loss.item(), 4), "batch_size": batch_size,
                         "learning_rate": learning_rate})
