"""``python -m train.toyworld build``: the whole toy world, from nothing to the embedded checkpoint.

Stages (each resumable; a finished stage is skipped when the build is run again, and a zeroft
export made under another ``Budget.zeroft`` trains on from the last saved state, or is re-exported from
the state saved at exactly that step):
1. VAE, 2. object encoder (open_clip, contrastive), 3. judge, 4. base text-to-image model,
5. the two training streams on disk, 6. zeroft training with the paper's recipe (train.train),
7. encoder views and guidance defaults chosen on TRAINING identities, 8. export (fp16) to ``--out``, the judge
and example photos of HELD-OUT identities to assets/.

``--quick`` runs every stage for a few steps (the smoke test); the real build takes about 5 h 40 min
on a 2-core CPU (see ``build.json`` in the work folder for measured times). ``--device`` (default: the
GPU when there is one) runs every stage, the sweeps included, on one CUDA GPU; there ``--workers``
processes render the training scenes ahead of the GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from zeroft.config import CONFIG_NAME, ZeroFTConfig

from ..checkpointing import list_checkpoints
from .models import UNETS, latent_size
from .world import shapes_in_turn, split_identities

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Steps per stage, sized on this 2-core machine (the full budget measured 5 h 20 min of training in all)."""

    vae: int = 5000  # batch 16; ~0.18 s/step measured here (2000 steps left patterns blurred)
    encoder: int = 2500  # batch = the 60 training identities; ~0.3 s/step
    judge: int = 2000  # batch 64; ~0.36 s/step (1200 steps read patterns at 0.90 on clean renderings)
    base: int = 5000  # batch 32; ~0.5 s/step
    zeroft: int = 26000  # batch 32; ~0.45 s/step. With true-to-outline masks, 26,000 steps beat 14,000 on TRAINING
    # identities (0.840 vs 0.774 identity, 288 pairs); with the old masker they had not (bench/results/toyworld-26000)
    general_images: int = 20000
    domain_per_identity: int = 40
    checkpoint_every: int = 500  # also the points of the accuracy-vs-steps curve
    guidance_pairs_per_identity: int = 3  # per identity in train_ids[::5], × 8 contexts: 288 pairs for views and guidance
    # (1 gave 96 pairs, which could not tell w_text 7.5 from 5.0 apart: 0.771 vs 0.760)
    sampler_steps: int = 20
    base_batch: int = 32
    base_lr: float = 2e-4
    zeroft_batch: int = 32
    zeroft_lr: float = 1e-4
    unet: str = "v1"  # models.UNETS


# One GPU: these tiny models are launch-bound there. On an H200 (2026-11-27) a base training step took
# 49 / 58 / 52 ms at batch 32 / 128 / 256 (v1 UNet; attn16: 86 / 63 / 116 ms), and a zeroft step at batch 256
# about 0.1 s. So the GPU budget takes bigger batches and fewer steps (about the CPU budget's samples; learning
# rates raised by about the square root of the batch ratio) and checkpoints more often. Run on an H200 with
# --unet attn16 (2026-11-27): base 236.7 s, zeroft 0.145 s/step, stopped at 2,250 of 3,500 steps by the lease;
# the v1 build on this budget has not run (see README).
GPU = Budget(base=2000, base_batch=128, base_lr=4e-4, zeroft=3500, zeroft_batch=256, zeroft_lr=2e-4,
             checkpoint_every=250)
BUDGETS = {"cpu": Budget(), "gpu": GPU}

QUICK = Budget(vae=3, encoder=3, judge=3, base=3, zeroft=2, general_images=64, domain_per_identity=2,
               checkpoint_every=1, guidance_pairs_per_identity=1, sampler_steps=2)


def zeroft_arguments(work: Path, budget: Budget, seed: int, validation: list[str], output: Path,
                     extra: list[str] = (), resume: str = "latest", device: str = "cpu", workers: int = 0,
                     init: Path | None = None) -> list[str]:
    """train.train arguments of the paper's recipe on the toy world (ablations append overrides); ``init``: the
    zeroft checkpoint training starts from (a grown model, see grow.py) instead of the base plus fresh adapter."""
    return [
        "--base_model", str(work / "base" / "base"), "--encoder", str(work / "encoder" / "encoder"),
        "--domain_data", str(work / "streams" / "domain"), "--general_data", str(work / "streams" / "general"),
        "--resolution", "64", "--train_batch_size", str(budget.zeroft_batch), "--max_train_steps", str(budget.zeroft),
        "--learning_rate", str(budget.zeroft_lr), "--lr_warmup_steps", str(min(200, budget.zeroft // 10)),
        "--mix_ratio", "0.3", "--cross_reference", "0.5", "--train", "whole", "--use_ema", "--ema_decay", "0.999",
        "--masker", "border", "--background_fill", "gray", "--seed", str(seed),
        "--checkpointing_steps", str(budget.checkpoint_every), "--checkpoints_total_limit", "1000",
        "--resume", resume, "--output_dir", str(output), "--export_dir", str(output / "final"),
        "--validation_images", *validation,
        "--validation_prompts", "one object on a white background", "two objects on a gray background",
        "one object on a brown background", "two objects on a black background",
        "--validation_steps", str(max(budget.checkpoint_every * 2, 1)),
        "--validation_inference_steps", str(budget.sampler_steps),
        "--validation_text_guidance", "5.0", "--validation_object_guidance", "3.0",
        "--dataloader_num_workers", str(workers), *(["--cpu"] if device == "cpu" else []),
        *(["--init_checkpoint", str(init)] if init is not None else []), *extra,
    ]


def trained_steps(final: Path) -> int | None:
    """Training steps of the exported zeroft checkpoint in ``final``, or None when there is none."""
    return ZeroFTConfig.load(final).training.get("steps") if (final / CONFIG_NAME).is_file() else None


def zeroft_resume(output: Path, steps: int) -> str:
    """The training state to resume: the one saved at exactly ``steps`` when the run went further (a budget
    smaller than before), else the newest."""
    exact = dict(list_checkpoints(output)).get(steps)
    return str(exact) if exact is not None else "latest"


def write_examples(folder: Path, held_out, seed: int, count: int = 6) -> list[dict]:
    """Reference photos of held-out identities (never seen in training; shapes taken in turn), 128 px, plus prompts."""
    import numpy as np
    from PIL import Image

    from .world import Context, random_pose, render

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 21])
    prompts = ["two objects on a white background", "one object on a black background",
               "two objects on a brown background", "one object on a gray background"]
    examples = []
    for index, identity in enumerate(shapes_in_turn(held_out)[:count]):
        image, _ = render(identity, Context(["gray", "white", "black", "brown"][index % 4], "one"), random_pose(rng, "one"))
        name = f"object-{index + 1:02d}.png"
        image.resize((128, 128), Image.Resampling.NEAREST).save(folder / name)
        examples.append({"image": name, "identity": identity.words, "prompt": prompts[index % len(prompts)]})
    (folder / "examples.json").write_text(json.dumps(examples, indent=2) + "\n")
    return examples


def build(work: Path, out: Path, assets: Path, budget: Budget, seed: int = 0, device: str = "cpu",
          workers: int | None = None, until: str | None = None, grow_from: Path | None = None,
          defaults_from: Path | None = None) -> dict:
    """Run every stage not yet done; ``until`` ("base" or "zeroft") stops after that stage's training, so a
    GPU can train and another machine (or a later run) does the sweeps and the export.

    ``grow_from`` (a trained v1 zeroft checkpoint; lat32 only): instead of training the encoder and base stages,
    grow the lat32 model out of it (grow.py) and start the zeroft stage there; the judge is then the one in
    ``assets``/toyworld-judge when there is one (the source build's instrument, so scores stay comparable).
    ``defaults_from`` (a zeroft checkpoint): take its encoder views and guidance defaults instead of running the
    two sweeps (about 40 minutes on the CPU)."""
    from diffusers import AutoencoderKL

    from zeroft.config import GenerationDefaults
    from zeroft.pipeline import ZeroFTPipeline

    from ..train import main as train_main
    from . import stages
    from .evaluate import choose_guidance, choose_views, load_judge, make_pairs
    from .scenes import write_streams

    if grow_from is not None and budget.unet != "lat32":
        raise SystemExit("--grow-from grows a lat32 model: add --unet lat32")
    started = time.perf_counter()
    device = stages.build_device(device)
    workers = stages.default_workers(device) if workers is None else workers
    work.mkdir(parents=True, exist_ok=True)
    train_ids, held_out = split_identities()
    report = {"budget": asdict(budget), "seed": seed, "held_out": [i.name for i in held_out], "stages": {},
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "workers": workers}

    def timed(name, function, *args):
        t = time.perf_counter()
        info = function(*args)
        report["stages"][name] = {**info, "wall_seconds_this_run": round(time.perf_counter() - t, 1)}
        logger.info(f"{name}: {report['stages'][name]}")
        (work / "build.json").write_text(json.dumps(report, indent=2) + "\n")

    timed("vae", stages.train_vae, work / "vae", train_ids, budget.vae, seed, device, workers,
          latent_size(budget.unet))
    vae = AutoencoderKL.from_pretrained(work / "vae" / "vae").to(device).eval()
    if grow_from is not None:
        from .grow import grow_stage

        timed("grow", grow_stage, grow_from, work, seed)
        shipped_judge = assets / "toyworld-judge"
        if not (work / "judge" / "done.json").is_file() and (shipped_judge / "judge.safetensors").is_file():
            (work / "judge").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shipped_judge / "judge.safetensors", work / "judge" / "judge.safetensors")
            info = json.loads((shipped_judge / "judge.json").read_text()) if (shipped_judge / "judge.json").is_file() else {}
            (work / "judge" / "done.json").write_text(json.dumps({**info, "copied_from": str(shipped_judge)}, indent=2) + "\n")
    else:
        timed("encoder", stages.train_encoder, work / "encoder", train_ids, held_out, budget.encoder, seed, device,
              workers)
    timed("judge", stages.train_judge, work / "judge", train_ids, held_out, vae, budget.judge, seed, workers)
    if grow_from is None:
        timed("base", stages.train_base, work / "base", train_ids, vae, budget.base, seed, budget.base_batch, workers,
              budget.base_lr, budget.unet)
    if until == "base":
        return report
    if not (work / "streams" / "done.json").is_file():
        write_streams(work / "streams", train_ids, budget.general_images, budget.domain_per_identity, seed, workers)
        (work / "streams" / "done.json").write_text("{}\n")

    validation = [str(p) for p in sorted((assets / "examples").glob("object-*.png"))[:3]]
    if not validation:
        write_examples(assets / "examples", held_out, seed)
        validation = [str(p) for p in sorted((assets / "examples").glob("object-*.png"))[:3]]
    t = time.perf_counter()
    final = work / "zeroft" / "final"
    if trained_steps(final) != budget.zeroft:  # none yet, or exported under another budget
        output = work / "zeroft"
        train_main(zeroft_arguments(work, budget, seed, validation, output, resume=zeroft_resume(output, budget.zeroft),
                                    device=device.type, workers=workers,
                                    init=work / "grow" / "init" if grow_from is not None else None))
    report["stages"]["zeroft"] = {"wall_seconds_this_run": round(time.perf_counter() - t, 1),
                                  **ZeroFTConfig.load(final).training}
    (work / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    if until == "zeroft":
        return report

    # Encoder views, then guidance defaults, chosen on training identities (new renderings) so the
    # test set stays unseen. Views are compared at the validation guidance the training run used.
    pipe = ZeroFTPipeline.from_pretrained(final, device=str(device))
    if defaults_from is not None:
        chosen = ZeroFTConfig.load(defaults_from)
        views, w_text, w_object = chosen.encoder.views, chosen.defaults.text_guidance, chosen.defaults.object_guidance
        pipe.set_encoder_views(views)
        report["defaults_from"] = {"checkpoint": str(defaults_from), "views": views, "text_guidance": w_text,
                                   "object_guidance": w_object}
    else:
        judge = load_judge(work / "judge" / "judge.safetensors")
        pairs = make_pairs(train_ids[::5], budget.guidance_pairs_per_identity, seed + 100)
        views, view_sweep = choose_views(pipe, judge, pairs, budget.sampler_steps, 5.0, 3.0)
        report["views_sweep_on_training_identities"] = view_sweep
        logger.info(f"encoder views: {views}")
        w_text, w_object, sweep = choose_guidance(pipe, judge, pairs, budget.sampler_steps)
        report["guidance_sweep_on_training_identities"] = sweep
    pipe.zeroft_config = pipe.zeroft_config.replace(
        defaults=GenerationDefaults(text_guidance=w_text, object_guidance=w_object, steps=budget.sampler_steps,
                                    height=64, width=64, negative_prompt=""),
        licenses={"spdx": "apache-2.0", "all": "Apache-2.0: every weight trained from scratch by zeroft's train/toyworld"},
    )
    if out.exists():
        shutil.rmtree(out)
    pipe.to("cpu")
    pipe.save_pretrained(out, dtype=torch.float16)
    shutil.copyfile(final / "validation.png", out / "validation.png")
    with open(out / "README.md", "a") as card:
        card.write("\n## Validation grid\n\nReferences of held-out identities (left), then four prompts.\n\n"
                   "![validation grid](validation.png)\n")

    judge_dir = assets / "toyworld-judge"
    judge_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "judge" / "judge.safetensors", judge_dir / "judge.safetensors")
    (judge_dir / "judge.json").write_text(json.dumps(report["stages"]["judge"], indent=2) + "\n")
    report["wall_seconds_total_this_run"] = round(time.perf_counter() - started, 1)
    report["checkpoint_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    (work / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.toyworld", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="train everything and export the embedded checkpoint")
    b.add_argument("--work", default="runs/toyworld", help="stage outputs and resumable state")
    b.add_argument("--out", default="assets/zeroft-toy", help="the exported zeroft checkpoint")
    b.add_argument("--assets", default="assets", help="where examples/ and toyworld-judge/ go")
    b.add_argument("--quick", action="store_true", help="a few steps per stage (smoke test)")
    b.add_argument("--budget", choices=sorted(BUDGETS), default="cpu",
                   help="steps and batch sizes: cpu (the shipped 2-core recipe) or gpu (bigger batches, fewer steps)")
    b.add_argument("--unet", choices=UNETS, default=None, help="UNet variant (default: the budget's): v1 (shipped), attn16 (attention at 16×16), "
                   "lat32 (32×32 latents from a 2×-down VAE; its own --work folder)")
    b.add_argument("--zeroft-steps", type=int, default=None, help="zeroft training steps (default: the budget's)")
    b.add_argument("--vae-steps", type=int, default=None, help="VAE training steps (default: the budget's)")
    b.add_argument("--base-steps", type=int, default=None, help="base model training steps (default: the budget's)")
    b.add_argument("--grow-from", default=None, metavar="CHECKPOINT",
                   help="lat32 only: grow the model out of this trained v1 zeroft checkpoint (e.g. assets/zeroft-toy) "
                        "instead of training the encoder and base stages")
    b.add_argument("--defaults-from", default=None, metavar="CHECKPOINT",
                   help="take encoder views and guidance defaults from this checkpoint instead of sweeping them")
    b.add_argument("--until", choices=("base", "zeroft"), default=None,
                   help="stop after this stage's training (run again without it for the sweeps and the export)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    b.add_argument("--workers", type=int, default=None,
                   help="processes rendering training scenes ahead (default: 0 on a CPU, up to 8 beside a GPU)")
    a = commands.add_parser("ablations", help="retrain the paper's ablations at one budget (after build)")
    a.add_argument("--work", default="runs/toyworld")
    a.add_argument("--steps", type=int, default=2000, help="training steps of every variant")
    a.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    a.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def budget_from_args(args: argparse.Namespace) -> Budget:
    """``--quick`` or ``--budget``, then the ``--unet`` and ``--vae-steps``/``--base-steps``/``--zeroft-steps`` overrides."""
    budget = QUICK if args.quick else BUDGETS[args.budget]
    steps = {}
    for stage in ("vae", "base", "zeroft"):
        value = getattr(args, f"{stage}_steps")
        if value is not None and value < 1:
            raise SystemExit(f"--{stage}-steps must be at least 1, got {value}")
        steps[stage] = getattr(budget, stage) if value is None else value
    return replace(budget, unet=args.unet or budget.unet, **steps)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.command == "ablations":
        from .ablations import run_ablations

        return run_ablations(Path(args.work), args.steps, args.seed, args.only)
    for option in ("grow_from", "defaults_from"):
        value = getattr(args, option)
        if value is not None and not (Path(value) / CONFIG_NAME).is_file():
            raise SystemExit(f"--{option.replace('_', '-')} {value}: no zeroft checkpoint there (no {CONFIG_NAME})")
    return build(Path(args.work), Path(args.out), Path(args.assets), budget_from_args(args), args.seed, args.device,
                 args.workers, args.until, Path(args.grow_from) if args.grow_from else None,
                 Path(args.defaults_from) if args.defaults_from else None)
