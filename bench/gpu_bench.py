"""GPU benchmark at Stable Diffusion 1.5 size: images/s and peak VRAM, zeroft vs diffusers' IP-Adapter.

    bash bench/gpu.sh            # on a CUDA machine; writes $OUT/gpu.json (or bench/results/gpu.json)
    python -m bench.gpu_bench --dry-run   # the same code path at toy size on a CPU

The models are built from SD1.5's configurations with random weights (speed does not depend on
the weights, so nothing is downloaded): UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M,
IP-Adapter projection + key/value layers for 1024-d image embeddings (random embeddings stand
in for the encoder output, which zeroft caches per photo anyway). For fp16, bnb-8bit and
bnb-4bit (UNet and text encoder quantized at load, as zeroft.load_pipeline does), each row
times diffusers' StableDiffusionPipeline with ip_adapter_image_embeds at guidance w, zeroft
with w_text = w_obj = w, and zeroft with two weights (three branches), at 512×512.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from .common import interleaved, machine


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
    text_encoder = CLIPTextModel(CLIPTextConfig())  # ViT-L/14's text tower, as SD1.5
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(77), scheduler=scheduler), 512


def build(folder: Path, mode: str, size: int, image_embed_dim: int):
    """(diffusers pipeline, zeroft pipeline) sharing one UNet with the object attention installed."""
    from diffusers import StableDiffusionPipeline

    from zeroft.adapter import initial_adapter_state_dict, load_object_attention
    from zeroft.config import GenerationDefaults, ZeroFTConfig
    from zeroft.pipeline import ZeroFTPipeline
    from zeroft.quantization import quantization_configs

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    kwargs = dict(safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    if mode == "fp16":
        stock = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, **kwargs)
    else:
        from diffusers import PipelineQuantizationConfig

        unet_config, text_config = quantization_configs(mode, dtype)
        stock = StableDiffusionPipeline.from_pretrained(
            folder, dtype=dtype, quantization_config=PipelineQuantizationConfig(
                quant_mapping={"unet": unet_config, "text_encoder": text_config}), **kwargs)
    load_object_attention(stock.unet, initial_adapter_state_dict(stock.unet, image_embed_dim))
    stock.to(device)
    config = ZeroFTConfig(base_model="base", image_embed_dim=image_embed_dim,
                          cross_attention_dim=stock.unet.config.cross_attention_dim,
                          defaults=GenerationDefaults(height=size, width=size), masker="border")
    ours = ZeroFTPipeline(**{k: v for k, v in stock.components.items() if k != "image_encoder"}, zeroft_config=config)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    return stock, ours


def measure(folder: Path, mode: str, size: int, steps: int, images: int, repeats: int, image_embed_dim: int) -> dict:
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    stock, ours = build(folder, mode, size, image_embed_dim)
    device = stock._execution_device
    embeds = torch.randn(1, image_embed_dim, device=device, dtype=stock.unet.dtype)
    ip = [torch.cat([torch.zeros_like(embeds), embeds]).repeat_interleave(images, 0)[:, None]]
    prompt = "a photo of a dog on the beach"
    calls = {
        "diffusers_ip_adapter": lambda: stock(prompt, ip_adapter_image_embeds=ip, guidance_scale=7.5,
                                              num_images_per_prompt=images, num_inference_steps=steps, height=size,
                                              width=size, output_type="latent"),
        "zeroft_equal_weights": lambda: ours(prompt, image_embeds=embeds, text_guidance=7.5, object_guidance=7.5,
                                             num_images=images, num_inference_steps=steps, output_type="latent"),
        "zeroft_three_branches": lambda: ours(prompt, image_embeds=embeds, text_guidance=7.5, object_guidance=3.0,
                                              num_images=images, num_inference_steps=steps, output_type="latent"),
    }
    seconds = interleaved(calls, repeats)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    del stock, ours
    return {
        "images_per_second": {k: round(images / v, 3) for k, v in seconds.items()},
        "ratio_equal_weights": round(seconds["zeroft_equal_weights"] / seconds["diffusers_ip_adapter"], 3),
        "ratio_three_branches": round(seconds["zeroft_three_branches"] / seconds["diffusers_ip_adapter"], 3),
        "peak_vram_gib": None if peak is None else round(peak / 2**30, 2),
        "note": "latents out (VAE decode excluded); UNet + text encoder quantized for bnb modes",
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on a CPU, fp16 row only")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=4, help="images per call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        raise SystemExit("bench.gpu_bench needs a CUDA GPU (use --dry-run to check the code path on a CPU)")
    started = time.perf_counter()
    parts, size = sd15_parts(args.dry_run)
    image_embed_dim = 16 if args.dry_run else 1024
    with tempfile.TemporaryDirectory() as temp:
        from diffusers import StableDiffusionPipeline

        StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, image_encoder=None,
                                requires_safety_checker=False).save_pretrained(temp, safe_serialization=True)
        del parts
        modes = ["fp16"] if args.dry_run else ["fp16", "bnb-8bit", "bnb-4bit"]
        rows = {mode: measure(Path(temp), mode, size, args.steps, args.images, args.repeats, image_embed_dim)
                for mode in modes}
    result = {"benchmark": "gpu", "size": size, "steps": args.steps, "images_per_call": args.images,
              "dry_run": args.dry_run, **machine(), "rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    for mode, row in rows.items():
        print(f"{mode}: zeroft {row['images_per_second']['zeroft_equal_weights']} img/s (equal weights), "
              f"{row['images_per_second']['zeroft_three_branches']} (three branches), diffusers "
              f"{row['images_per_second']['diffusers_ip_adapter']}; peak {row['peak_vram_gib']} GiB")
    return result


if __name__ == "__main__":
    main()
