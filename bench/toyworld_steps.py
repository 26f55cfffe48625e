"""Per-step cost of the toy world's base-model training step on one device, per UNet variant and batch size.

One step = text encoder + UNet forward and backward (v-prediction loss) and AdamW, on a FIXED batch, so data
loading is left out; the CPU time to render one batch of scenes is printed beside it, since rendering feeds
every step of the base stage. Sizes a build's budget for a device (see train.toyworld.build.GPU).

    python -m bench.toyworld_steps --device cuda            # measured on an H200: bench/results/gpu-h200-2026-11-27
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> dict:
    from diffusers import DDPMScheduler

    from train.losses import diffusion_loss, step_generator
    from train.toyworld.models import UNETS, make_scheduler, make_text_encoder, make_tokenizer, make_unet
    from train.toyworld.scenes import Scenes
    from train.toyworld.stages import SceneBatch, _identity_tokens, build_device
    from train.toyworld.world import split_identities

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--unets", nargs="+", default=list(UNETS), choices=UNETS)
    parser.add_argument("--steps", type=int, default=10, help="timed steps, after 3 warm-up steps")
    parser.add_argument("--render", type=int, default=128, help="scenes rendered once on the CPU and timed")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=("fp32", "bf16"),
                        help="fp32, or bf16 autocast around the forward passes (what --mixed_precision bf16 does)")
    args = parser.parse_args(argv)
    device = build_device(args.device)

    train_ids, _ = split_identities()
    started = time.perf_counter()
    batch = SceneBatch(Scenes(5, train_ids), args.render)(0)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              f"render_{args.render}_scenes_s": round(time.perf_counter() - started, 3), "seconds_per_step": {}}
    tokenizer = make_tokenizer()
    noise_scheduler = DDPMScheduler.from_config(make_scheduler().config)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    print(f"device {report['device']}; rendering {args.render} scenes: {report[f'render_{args.render}_scenes_s']} s")
    print("| UNet | batch | precision | s/step | samples/s |\n| --- | --- | --- | --- | --- |")
    runs = [(v, b, p) for v in args.unets for b in args.batches for p in args.precisions]
    for variant, size, precision in runs:
        unet, text_encoder = make_unet(0, variant).to(device), make_text_encoder(0).to(device)
        parameters = list(unet.parameters()) + list(text_encoder.parameters())
        optimizer = torch.optim.AdamW(parameters, lr=1e-4)
        side = unet.config.sample_size
        latents = torch.randn(size, unet.config.in_channels, side, side, device=device)
        captions = (batch["caption"] * (size // len(batch["caption"]) + 1))[:size]
        tokens = _identity_tokens(tokenizer, captions).to(device)
        for step in range(3 + args.steps):
            if step == 3:
                sync()
                started = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                hidden = text_encoder(tokens)[0]
                loss = diffusion_loss(unet, noise_scheduler, latents, hidden, None, step_generator(0, step, 5, 0))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync()
        seconds = (time.perf_counter() - started) / args.steps
        key = f"{variant}@{size}" + ("" if precision == "fp32" else f"@{precision}")
        report["seconds_per_step"][key] = round(seconds, 4)
        print(f"| {variant} | {size} | {precision} | {seconds:.4f} | {size / seconds:,.0f} |", flush=True)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
