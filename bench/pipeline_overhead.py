"""zeroft's guidance vs diffusers' own IP-Adapter pipeline, same weights, steps, size and seed.

    python -m bench.pipeline_overhead [--steps 10] [--repeats 5] [--intervals LO HI [LO HI ...]]

Rows per UNet size (tiny: the test model; medium: SD's block layout at ~1/10 width):
diffusers StableDiffusionPipeline + load_ip_adapter with guidance_scale w; zeroft with
w_text = w_obj = w (two branches, must cost the same: target ≤ 1.03x); zeroft with two different
weights (three branches: target ≤ 1.55x); zeroft with two different weights and guidance only on each
interval of noise levels in ``--intervals`` (zeroft.guidance: three branches inside, one outside; its
fraction f of steps inside is reported, the expected cost being (1 + 2f)/2 of the baseline).
Times are medians of round-robin runs in one process.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from zeroft.adapter import initial_adapter_state_dict, load_object_attention
from zeroft.config import GenerationDefaults, ZeroFTConfig
from zeroft.guidance import PAPER_SDXL_INTERVAL, guided_share
from zeroft.pipeline import ZeroFTPipeline
from zeroft.tiny import tiny_encoder, tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae

from .common import interleaved, machine, medium_unet_kwargs, report


def pipelines(size: str):
    torch.manual_seed(0)
    if size == "tiny":
        unet, text_encoder = tiny_unet(), tiny_text_encoder()
    else:
        unet, text_encoder = UNet2DConditionModel(**medium_unet_kwargs()), tiny_text_encoder(hidden_size=256)
    parts = dict(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tiny_tokenizer(), scheduler=tiny_scheduler(),
                 safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    state = initial_adapter_state_dict(unet, image_embed_dim=16)
    stock = StableDiffusionPipeline(unet=copy.deepcopy(unet), **parts)
    nested = {"image_proj": {k[11:]: v for k, v in state.items() if k.startswith("image_proj.")},
              "ip_adapter": {k[11:]: v for k, v in state.items() if k.startswith("ip_adapter.")}}
    stock.load_ip_adapter(nested, subfolder="", weight_name="", image_encoder_folder=None)
    load_object_attention(unet, state)
    config = ZeroFTConfig(base_model="base", image_embed_dim=16, cross_attention_dim=unet.config.cross_attention_dim,
                          defaults=GenerationDefaults(height=64, width=64), masker="border")
    ours = ZeroFTPipeline(unet=unet, object_encoder=tiny_encoder(), zeroft_config=config,
                          **{k: v for k, v in parts.items() if k != "requires_safety_checker"})
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    return stock, ours


NARROW_INTERVAL = (0.40, 2.50)  # half the steps of a 20-step trailing schedule: the toy world's narrow interval


def _label(interval) -> str:
    return f"zeroft_interval_{interval[0]:g}_{interval[1]:g}"


def measure(size: str, steps: int, repeats: int, w: float = 7.5, w_object: float = 3.0,
            intervals=(PAPER_SDXL_INTERVAL, NARROW_INTERVAL)) -> dict:
    stock, ours = pipelines(size)
    embeds = torch.randn(1, 16)
    ip_embeds = [torch.cat([torch.zeros_like(embeds), embeds])[:, None]]
    shape = (1, 4, 32, 32)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    prompt = "a red square on a blue background"
    calls = {
        "diffusers_ip_adapter": lambda: stock(prompt, ip_adapter_image_embeds=ip_embeds, guidance_scale=w,
                                              num_inference_steps=steps, latents=latents.clone(), height=64, width=64,
                                              output_type="np").images,
        "zeroft_equal_weights": lambda: ours(prompt, image_embeds=embeds, text_guidance=w, object_guidance=w,
                                             num_inference_steps=steps, latents=latents.clone(), output_type="np").images,
        "zeroft_three_branches": lambda: ours(prompt, image_embeds=embeds, text_guidance=w, object_guidance=w_object,
                                              num_inference_steps=steps, latents=latents.clone(), output_type="np").images,
    }
    for interval in intervals:
        calls[_label(interval)] = (lambda interval=interval: ours(
            prompt, image_embeds=embeds, text_guidance=w, object_guidance=w_object, num_inference_steps=steps,
            latents=latents.clone(), output_type="np", guidance_interval=interval).images)
    difference = float(np.abs(calls["diffusers_ip_adapter"]() - calls["zeroft_equal_weights"]()).max())
    seconds = interleaved(calls, repeats)
    base = seconds["diffusers_ip_adapter"]
    return {
        "unet_parameters_M": round(sum(p.numel() for p in ours.unet.parameters()) / 1e6, 2),
        "seconds_per_image": {k: round(v, 4) for k, v in seconds.items()},
        "ratio_equal_weights": round(seconds["zeroft_equal_weights"] / base, 3),
        "ratio_three_branches": round(seconds["zeroft_three_branches"] / base, 3),
        "max_pixel_difference_equal_weights": difference,
        "intervals": {f"{lo:g}-{hi:g}": {"fraction_inside": round(guided_share(ours.scheduler, steps, w, w_object, (lo, hi)), 3),
                                         "ratio": round(seconds[_label((lo, hi))] / base, 3)} for lo, hi in intervals},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--intervals", type=float, nargs="+", default=[*PAPER_SDXL_INTERVAL, *NARROW_INTERVAL],
                        metavar="LO HI", help="guidance intervals to time, as pairs of noise levels")
    args = parser.parse_args(argv)
    if len(args.intervals) % 2:
        parser.error("--intervals takes pairs LO HI")
    intervals = list(zip(args.intervals[::2], args.intervals[1::2]))
    results = {size: measure(size, args.steps, args.repeats, intervals=intervals) for size in ("tiny", "medium")}
    summary = "; ".join(f"{size}: equal weights {r['ratio_equal_weights']}x, three branches {r['ratio_three_branches']}x, "
                        + ", ".join(f"interval {name} (f {i['fraction_inside']}) {i['ratio']}x" for name, i in r["intervals"].items())
                        + " of diffusers' IP-Adapter pipeline" for size, r in results.items())
    return report({"benchmark": "pipeline_overhead", "steps": args.steps, "image_size": 64, **machine(), **results},
                  summary)


if __name__ == "__main__":
    main()
