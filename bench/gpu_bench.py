"""GPU benchmark at SD1.5 and SDXL size: images/s and peak VRAM, zeroft vs diffusers' IP-Adapter.

    bash bench/gpu.sh            # on a CUDA machine; writes $OUT/gpu.json (or bench/results/gpu.json)
    python -m bench.gpu_bench --dry-run   # the same code path at toy size on a CPU

The models are built from the real configurations with random weights (speed does not depend on
the weights, so nothing is downloaded): SD1.5 (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder
123M) at 512 px, and SDXL base 1.0 (UNet 2.6B, VAE, CLIP ViT-L/14 text + OpenCLIP bigG/14 text
695M; the configurations of bench.full_size) at 1024 px, with IP-Adapter projection + key/value
layers for 1024-d (SD1.5, ViT-H/14) or 1280-d (SDXL, ViT-bigG/14) image embeddings; random
embeddings stand in for the encoder output, which zeroft caches per photo anyway. For fp16,
bnb-8bit and bnb-4bit (UNet and text encoder(s) quantized at load, as zeroft.load_pipeline does),
each row times diffusers' pipeline with ip_adapter_image_embeds at guidance w, zeroft with
w_text = w_obj = w, and zeroft with two weights (three branches); the fp16 row also times zeroft with
two weights on the guidance interval (0.28, 5.42] (three branches inside, one outside). Peak VRAM is over the timed
calls (latents out) and, separately, one call that decodes an image.

``--backbone flux`` (not part of ``all``: writing its 12B transformer and 4.7B T5-XXL takes minutes of a short GPU
lease) times FLUX.1-dev's configuration at 1024 px in bf16 and bnb-4bit (nf4: transformer and text encoders), with the
XLabs v2 adapter's shapes (16 tokens from 768-d embeddings): diffusers' FluxPipeline with the adapter and
true_cfg_scale w against zeroft with w_text = w_obj = w (both two branches), zeroft's default (w_text = w_obj = 1: one
branch, which stock FLUX with the adapter equals) and zeroft with two weights (three branches). Target (issue 35):
nf4 peak at most 16 GB at 1024 px.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from zeroft.guidance import PAPER_SDXL_INTERVAL

from .common import interleaved, machine

IMAGES = {"sd15": 4, "sdxl": 1, "flux": 1}  # images per call: SDXL's and FLUX's targets are for one 1024 px image
EMBED_DIMS = {"sd15": 1024, "sdxl": 1280, "flux": 768}  # ViT-H/14, ViT-bigG/14, CLIP ViT-L/14 pooled widths
NUM_TOKENS = {"sd15": 4, "sdxl": 4, "flux": 16}  # h94's files; XLabs v2
# FLUX.1-dev's T5-XXL encoder (google/t5-v1_1-xxl's encoder: 4.7B) and VAE (16 latent channels, scaled and shifted)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
FLUX_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=16, sample_size=1024,
                use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)


def sd15_parts(dry_run: bool):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from zeroft.tiny import tiny_tokenizer

    torch.manual_seed(0)
    if dry_run:
        from zeroft.tiny import tiny_text_encoder, tiny_unet, tiny_vae

        return dict(unet=tiny_unet(), vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=tiny_tokenizer(),
                    scheduler=DDIMScheduler(steps_offset=1)), 64
    unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64, attention_head_dim=8)  # SD1.5's layout
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512)
    from .full_size import CLIP_L_TEXT

    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT))  # ViT-L/14's text tower (123M), as SD1.5
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(77), scheduler=scheduler), 512


def sdxl_parts(dry_run: bool):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from zeroft.tiny import tiny_tokenizer

    torch.manual_seed(0)
    if dry_run:
        from zeroft.tiny import tiny_sdxl_base_pipeline

        components = tiny_sdxl_base_pipeline().components
        return {k: v for k, v in components.items() if k not in ("image_encoder", "feature_extractor")}, 64
    from .full_size import BIGG_TEXT, CLIP_L_TEXT, SDXL_UNET, SDXL_VAE

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")  # SDXL base 1.0's sampler
    return dict(unet=UNet2DConditionModel(**SDXL_UNET), vae=AutoencoderKL(**SDXL_VAE),
                text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**BIGG_TEXT)),
                tokenizer=tiny_tokenizer(77), tokenizer_2=tiny_tokenizer(77), scheduler=scheduler), 1024


def flux_parts(dry_run: bool):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from zeroft.tiny import tiny_t5_tokenizer, tiny_tokenizer

    torch.manual_seed(0)
    if dry_run:
        from zeroft.tiny import tiny_flux_base_pipeline

        components = tiny_flux_base_pipeline().components
        return {k: v for k, v in components.items() if k not in ("image_encoder", "feature_extractor")}, 64
    from .full_size import CLIP_L_TEXT

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)  # FLUX.1-dev's
    transformer = FluxTransformer2DModel(guidance_embeds=True)  # diffusers' defaults are FLUX.1's layout (11.9B)
    return dict(transformer=transformer, vae=AutoencoderKL(**FLUX_VAE),
                text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)),
                text_encoder_2=T5EncoderModel(T5Config(**T5_XXL)), tokenizer=tiny_tokenizer(77),
                tokenizer_2=tiny_t5_tokenizer(), scheduler=scheduler), 1024


def save_base(backbone: str, parts: dict, folder: str, dtype: torch.dtype) -> None:
    """The random-weight base as a diffusers folder, in the dtype it will run in (half the bytes to write)."""
    from zeroft.backbones import get_backbone

    spec = get_backbone("sd" if backbone == "sd15" else backbone)
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.to(dtype)
    pipe = spec.base_class()(**parts, **spec.base_arguments())
    pipe.save_pretrained(folder, safe_serialization=True)


def build(folder: Path, backbone: str, mode: str, size: int, image_embed_dim: int):
    """(diffusers pipeline, zeroft pipeline) sharing one denoiser with the object attention installed."""
    from diffusers import PipelineQuantizationConfig

    from zeroft.adapter import initial_adapter_state_dict, load_object_attention, object_token_width
    from zeroft.backbones import get_backbone
    from zeroft.config import GenerationDefaults, ZeroFTConfig
    from zeroft.loading import PIPELINE_CLASSES
    from zeroft.quantization import quantization_configs

    spec = get_backbone("sd" if backbone == "sd15" else backbone)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = base_dtype(backbone) if device == "cuda" else torch.float32
    kwargs = spec.base_arguments()
    if mode != "fp16":
        unet_config, text_config = quantization_configs(mode, dtype)
        kwargs["quantization_config"] = PipelineQuantizationConfig(
            quant_mapping={spec.denoiser: unet_config, **{name: text_config for name in spec.text_encoders}})
    stock = spec.base_class().from_pretrained(folder, dtype=dtype, **kwargs)
    denoiser = getattr(stock, spec.denoiser)
    load_object_attention(denoiser, initial_adapter_state_dict(denoiser, image_embed_dim, NUM_TOKENS[backbone]))
    stock.to(device)
    config = ZeroFTConfig(base_model="base", backbone=spec.name, image_embed_dim=image_embed_dim,
                          cross_attention_dim=object_token_width(denoiser), num_tokens=NUM_TOKENS[backbone],
                          defaults=GenerationDefaults(height=size, width=size), masker="border")
    encoder = None
    if backbone == "flux":  # its ϕ is the encoder's embedding of a black image: a random tower of the real shape
        encoder = object_encoder(image_embed_dim).to(device=device, dtype=dtype)
    ours = PIPELINE_CLASSES[spec.name](**{k: v for k, v in stock.components.items() if k != "image_encoder"},
                                       zeroft_config=config, object_encoder=encoder)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    return stock, ours


def object_encoder(image_embed_dim: int):
    """FLUX's object encoder with random weights: OpenAI CLIP ViT-L/14's tower (open_clip ViT-L-14-quickgelu, 768-d),
    or at toy size (a dry run) zeroft.tiny's."""
    import open_clip

    from zeroft.config import EncoderConfig
    from zeroft.encoder import ObjectEncoder, build_visual
    from zeroft.tiny import tiny_encoder

    if image_embed_dim != 768:
        return tiny_encoder()
    return ObjectEncoder(build_visual(open_clip.get_model_config("ViT-L-14-quickgelu")), EncoderConfig(),
                         open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)


def base_dtype(backbone: str) -> torch.dtype:
    """The dtype a backbone runs in on a GPU: fp16 for SD1.5 and SDXL (the "fp16" rows), bf16 for FLUX.1."""
    return torch.bfloat16 if backbone == "flux" else torch.float16


def flux_calls(stock, ours, embeds, images: int, steps: int, size: int) -> dict:
    """FLUX.1's timed calls: stock true guidance with the adapter against zeroft at equal weights, zeroft's default
    (one branch) and zeroft with two weights (three branches)."""
    prompt = "a photo of a dog on the beach"
    null = ours.null_object().to(embeds)
    ip, negative = [embeds.repeat(images, 1)[:, None]], [null.repeat(images, 1)[:, None]]
    common = dict(num_inference_steps=steps, output_type="latent")
    return {
        "diffusers_ip_adapter": lambda: stock(prompt, negative_prompt="", true_cfg_scale=4.0, guidance_scale=3.5,
                                              ip_adapter_image_embeds=ip, negative_ip_adapter_image_embeds=negative,
                                              num_images_per_prompt=images, height=size, width=size, **common),
        "zeroft_equal_weights": lambda: ours(prompt, image_embeds=embeds, text_guidance=4.0, object_guidance=4.0,
                                             num_images=images, **common),
        "zeroft_one_branch": lambda: ours(prompt, image_embeds=embeds, text_guidance=1.0, object_guidance=1.0,
                                          num_images=images, **common),
        "zeroft_three_branches": lambda: ours(prompt, image_embeds=embeds, text_guidance=4.0, object_guidance=2.0,
                                              num_images=images, **common),
    }


def measure(folder: Path, backbone: str, mode: str, size: int, steps: int, images: int, repeats: int,
            image_embed_dim: int, interval: tuple[float, float] | None = None) -> dict:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    stock, ours = build(folder, backbone, mode, size, image_embed_dim)
    device = stock._execution_device
    embeds = torch.randn(1, image_embed_dim, device=device, dtype=ours.denoiser.dtype)
    ip = [torch.cat([torch.zeros_like(embeds), embeds]).repeat_interleave(images, 0)[:, None]]
    prompt = "a photo of a dog on the beach"
    calls = flux_calls(stock, ours, embeds, images, steps, size) if backbone == "flux" else {
        "diffusers_ip_adapter": lambda: stock(prompt, ip_adapter_image_embeds=ip, guidance_scale=7.5,
                                              num_images_per_prompt=images, num_inference_steps=steps, height=size,
                                              width=size, output_type="latent"),
        "zeroft_equal_weights": lambda: ours(prompt, image_embeds=embeds, text_guidance=7.5, object_guidance=7.5,
                                             num_images=images, num_inference_steps=steps, output_type="latent"),
        "zeroft_three_branches": lambda: ours(prompt, image_embeds=embeds, text_guidance=7.5, object_guidance=3.0,
                                              num_images=images, num_inference_steps=steps, output_type="latent"),
    }
    if interval is not None:  # three branches only for noise levels in the interval (zeroft.guidance), one elsewhere
        calls["zeroft_interval"] = lambda: ours(prompt, image_embeds=embeds, text_guidance=7.5, object_guidance=3.0,
                                                num_images=images, num_inference_steps=steps, output_type="latent",
                                                guidance_interval=interval)
    seconds = interleaved(calls, repeats)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ours(prompt, image_embeds=embeds, text_guidance=7.5, object_guidance=7.5, num_images=1, num_inference_steps=2,
         output_type="pil", **({"height": size, "width": size} if backbone == "flux" else {}))  # the VAE's peak
    peak_decode = torch.cuda.max_memory_allocated() if cuda else None
    del stock, ours
    return {
        "images_per_second": {k: round(images / v, 3) for k, v in seconds.items()},
        "ratio_equal_weights": round(seconds["zeroft_equal_weights"] / seconds["diffusers_ip_adapter"], 3),
        "ratio_three_branches": round(seconds["zeroft_three_branches"] / seconds["diffusers_ip_adapter"], 3),
        **({"ratio_one_branch": round(seconds["zeroft_one_branch"] / seconds["diffusers_ip_adapter"], 3)}
           if "zeroft_one_branch" in seconds else {}),
        **({"interval": list(interval), "seconds_per_image_interval": round(seconds["zeroft_interval"] / images, 4),
            "ratio_interval": round(seconds["zeroft_interval"] / seconds["diffusers_ip_adapter"], 3)}
           if interval is not None else {}),
        "peak_vram_gib": None if peak is None else round(peak / 2**30, 2),
        "peak_vram_gib_one_decoded_image": None if peak_decode is None else round(peak_decode / 2**30, 2),
        "note": "timed calls return latents (VAE decode excluded); UNet (FLUX: transformer) + text encoder(s) "
                "quantized for bnb modes" + ("; FLUX rows: bf16 in the fp16 row" if backbone == "flux" else ""),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on a CPU, fp16 row only")
    parser.add_argument("--backbone", choices=["sd15", "sdxl", "flux", "all"], default="all",
                        help="all: sd15 and sdxl; flux on its own (minutes to write its weights)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=None, help=f"images per call (default {IMAGES})")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        raise SystemExit("bench.gpu_bench needs a CUDA GPU (use --dry-run to check the code path on a CPU)")
    started = time.perf_counter()
    backbones = ["sd15", "sdxl"] if args.backbone == "all" else [args.backbone]
    result = {"benchmark": "gpu", "steps": args.steps, "dry_run": args.dry_run, **machine(), "backbones": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for backbone in backbones:
        parts, size = {"sd15": sd15_parts, "sdxl": sdxl_parts, "flux": flux_parts}[backbone](args.dry_run)
        image_embed_dim = 16 if args.dry_run else EMBED_DIMS[backbone]
        dtype = base_dtype(backbone) if torch.cuda.is_available() else torch.float32
        images = args.images or IMAGES[backbone]
        with tempfile.TemporaryDirectory() as temp:
            save_base(backbone, parts, temp, dtype)
            del parts
            modes = ["fp16"] if args.dry_run else ["fp16", "bnb-4bit"] if backbone == "flux" else [
                "fp16", "bnb-8bit", "bnb-4bit"]
            rows = {mode: measure(Path(temp), backbone, mode, size, args.steps, images, args.repeats, image_embed_dim,
                                  interval=PAPER_SDXL_INTERVAL if mode == "fp16" and backbone != "flux" else None)
                    for mode in modes}  # one interval row per UNet backbone
        result["backbones"][backbone] = {"size": size, "images_per_call": images, "rows": rows}
        result["seconds"] = round(time.perf_counter() - started, 1)
        (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")  # after each backbone: a cut run keeps it
        for mode, row in rows.items():
            print(f"{backbone} {size}px {mode}: zeroft {row['images_per_second']['zeroft_equal_weights']} img/s (equal "
                  f"weights, {row['ratio_equal_weights']}x diffusers), {row['images_per_second']['zeroft_three_branches']} "
                  f"(three branches), diffusers {row['images_per_second']['diffusers_ip_adapter']}; peak "
                  f"{row['peak_vram_gib']} GiB, {row['peak_vram_gib_one_decoded_image']} GiB with a decode"
                  + (f"; guidance interval {row['interval']}: {row['seconds_per_image_interval']} s/image, "
                     f"{row['ratio_interval']}x diffusers" if "interval" in row else ""), flush=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
