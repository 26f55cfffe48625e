"""``python -m toyworld build``: the whole toy world, from nothing to the embedded checkpoint.

Stages (each resumable; a finished stage is skipped when the build is run again, and a zeroft
export made under another ``Budget.zeroft`` trains on from the last saved state, or is re-exported from
the state saved at exactly that step):
1. VAE, 2. object encoder (open_clip, contrastive), 3. judge, 4. base text-to-image model,
5. the two training streams on disk, 6. zeroft training with the paper's recipe (train.train),
7. encoder views and guidance defaults chosen on TRAINING identities, 8. export (fp16) to ``--out``, the judge
and example photos of HELD-OUT identities to assets/.

``--quick`` runs every stage for a few steps (the smoke test); the real build takes hours on a 2-core
CPU (``build.json`` in the work folder records the measured times). ``--device`` (default: the GPU when
there is one) runs every stage, the sweeps included, on one CUDA GPU; there ``--workers`` processes
render the training scenes ahead of the GPU.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from train.checkpointing import list_checkpoints
from train.train import run as train_run
from zeroft.config import CONFIG_NAME, GenerationDefaults, ZeroFTConfig
from zeroft.errors import InputError
from zeroft.pipeline import ZeroFTPipeline

from .budget import Budget, train_config
from .evaluate import choose_guidance, choose_views, load_judge, make_pairs
from .grow import grow_stage
from .models import latent_size
from .runtime import build_device, default_workers
from .scenes import write_streams
from .stages import train_base, train_encoder, train_judge, train_vae
from .world import Context, Identity, random_pose, render, shapes_in_turn, split_identities

logger = logging.getLogger(__name__)

LICENSES = {"spdx": "apache-2.0", "all": "Apache-2.0: every weight trained from scratch by zeroft's toyworld"}


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


@dataclass
class BuildRun:
    """One run of ``build``: where it works, under which budget, on which device, and its report (build.json)."""

    work: Path
    assets: Path
    budget: Budget
    seed: int
    device: torch.device
    workers: int
    train_ids: list[Identity]
    held_out: list[Identity]
    report: dict = field(default_factory=dict)

    def save(self) -> None:
        (self.work / "build.json").write_text(json.dumps(self.report, indent=2) + "\n")

    def timed(self, name: str, function, *args) -> None:
        """Run one stage, record what it returns and its wall time in the report, and save the report."""
        started = time.perf_counter()
        info = function(*args)
        self.report["stages"][name] = {**info, "wall_seconds_this_run": round(time.perf_counter() - started, 1)}
        logger.info(f"{name}: {self.report['stages'][name]}")
        self.save()


def start_run(work: Path, assets: Path, budget: Budget, seed: int, device: str, workers: int | None) -> BuildRun:
    device = build_device(device)
    workers = default_workers(device) if workers is None else workers
    work.mkdir(parents=True, exist_ok=True)
    train_ids, held_out = split_identities()
    report = {"budget": asdict(budget), "seed": seed, "held_out": [i.name for i in held_out], "stages": {},
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "workers": workers}
    return BuildRun(work, assets, budget, seed, device, workers, train_ids, held_out, report)


def copy_shipped_judge(shipped: Path, folder: Path) -> None:
    """A grown build's judge: the shipped one (the source build's instrument, so scores stay comparable), marked
    finished so the judge stage keeps it; nothing when the stage is done or nothing is shipped."""
    if (folder / "done.json").is_file() or not (shipped / "judge.safetensors").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped / "judge.safetensors", folder / "judge.safetensors")
    info = json.loads((shipped / "judge.json").read_text()) if (shipped / "judge.json").is_file() else {}
    (folder / "done.json").write_text(json.dumps({**info, "copied_from": str(shipped)}, indent=2) + "\n")


def pretrain(run: BuildRun, grow_from: Path | None) -> None:
    """Stages 1-4: VAE, object encoder, judge and base model; with ``grow_from``, the grown model (grow.py)
    stands in for the encoder and base stages."""
    work, budget, seed, workers = run.work, run.budget, run.seed, run.workers
    run.timed("vae", train_vae, work / "vae", run.train_ids, budget.vae, seed, run.device, workers,
              latent_size(budget.unet))
    vae = AutoencoderKL.from_pretrained(work / "vae" / "vae").to(run.device).eval()
    if grow_from is not None:
        run.timed("grow", grow_stage, grow_from, work, seed)
        copy_shipped_judge(run.assets / "toyworld-judge", work / "judge")
    else:
        run.timed("encoder", train_encoder, work / "encoder", run.train_ids, run.held_out, budget.encoder, seed,
                  run.device, workers)
    run.timed("judge", train_judge, work / "judge", run.train_ids, run.held_out, vae, budget.judge, seed, workers,
              budget.judge_eval_images)
    if grow_from is None:
        run.timed("base", train_base, work / "base", run.train_ids, vae, budget.base, seed, budget.base_batch, workers,
                  budget.base_lr, budget.unet)


def write_training_streams(run: BuildRun) -> None:
    """Stage 5: the general-domain and domain-specific streams train.train reads, written once."""
    done = run.work / "streams" / "done.json"
    if not done.is_file():
        write_streams(run.work / "streams", run.train_ids, run.budget.general_images, run.budget.domain_per_identity,
                      run.seed, run.workers)
        done.write_text("{}\n")


def validation_photos(run: BuildRun) -> list[str]:
    """The validation grid's references: the first three example photos, written first when there are none."""
    examples = run.assets / "examples"
    if not sorted(examples.glob("object-*.png")):
        write_examples(examples, run.held_out, run.seed)
    return [str(p) for p in sorted(examples.glob("object-*.png"))[:3]]


def train_zeroft(run: BuildRun, validation: list[str], init: Path | None) -> Path:
    """Stage 6: zeroft training (train.train) unless ``final`` was exported under this budget; returns ``final``."""
    started = time.perf_counter()
    output = run.work / "zeroft"
    final = output / "final"
    if trained_steps(final) != run.budget.zeroft:  # none yet, or exported under another budget
        train_run(train_config(run.work, run.budget, run.seed, validation, output,
                                resume=zeroft_resume(output, run.budget.zeroft), device=run.device.type,
                                workers=run.workers, init=init))
    run.report["stages"]["zeroft"] = {"wall_seconds_this_run": round(time.perf_counter() - started, 1),
                                      **ZeroFTConfig.load(final).training}
    run.save()
    return final


def defaults_of_checkpoint(run: BuildRun, pipe: ZeroFTPipeline, source: Path) -> tuple[float, float]:
    """Stage 7 without the sweeps: ``source``'s encoder views (set on ``pipe``) and guidance weights."""
    chosen = ZeroFTConfig.load(source)
    views, w_text, w_object = chosen.encoder.views, chosen.defaults.text_guidance, chosen.defaults.object_guidance
    pipe.set_encoder_views(views)
    run.report["defaults_from"] = {"checkpoint": str(source), "views": views, "text_guidance": w_text,
                                   "object_guidance": w_object}
    return w_text, w_object


def sweep_defaults(run: BuildRun, pipe: ZeroFTPipeline) -> tuple[float, float]:
    """Stage 7: encoder views, then guidance weights, chosen on training identities (new renderings) so the test
    set stays unseen. Views are compared at the validation guidance the training run used; ``pipe`` keeps them."""
    judge = load_judge(run.work / "judge" / "judge.safetensors")
    pairs = make_pairs(run.train_ids[::run.budget.sweep_identity_stride], run.budget.guidance_pairs_per_identity, run.seed + 100)
    views, view_sweep = choose_views(pipe, judge, pairs, run.budget.sampler_steps, 5.0, 3.0)
    run.report["views_sweep_on_training_identities"] = view_sweep
    logger.info(f"encoder views: {views}")
    w_text, w_object, sweep = choose_guidance(pipe, judge, pairs, run.budget.sampler_steps, *run.budget.guidance_grid)
    run.report["guidance_sweep_on_training_identities"] = sweep
    return w_text, w_object


def export(pipe: ZeroFTPipeline, final: Path, out: Path, budget: Budget, w_text: float, w_object: float) -> None:
    """Stage 8: ``pipe`` with its chosen defaults, in fp16, to ``out`` (replacing what was there), with the training
    run's validation grid (the ``training`` record it carries names it, and the model card shows it)."""
    pipe.zeroft_config = pipe.zeroft_config.replace(
        defaults=GenerationDefaults(text_guidance=w_text, object_guidance=w_object, steps=budget.sampler_steps,
                                    height=64, width=64, negative_prompt=""),
        licenses=LICENSES,
    )
    if out.exists():
        shutil.rmtree(out)
    pipe.to("cpu")
    pipe.save_pretrained(out, dtype=torch.float16)
    grid = pipe.zeroft_config.training.get("validation_grid")
    if grid:
        shutil.copyfile(final / grid, out / grid)


def ship_judge(run: BuildRun) -> None:
    """The judge and its accuracies to ``assets``/toyworld-judge, for the evaluation of the exported model."""
    judge_dir = run.assets / "toyworld-judge"
    judge_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.work / "judge" / "judge.safetensors", judge_dir / "judge.safetensors")
    (judge_dir / "judge.json").write_text(json.dumps(run.report["stages"]["judge"], indent=2) + "\n")


def build(work: Path, out: Path, assets: Path, budget: Budget, seed: int = 0, device: str = "cpu",
          workers: int | None = None, until: str | None = None, grow_from: Path | None = None,
          defaults_from: Path | None = None) -> dict:
    """Run every stage not yet done; ``until`` ("base" or "zeroft") stops after that stage's training, so a
    GPU can train and another machine (or a later run) does the sweeps and the export.

    Args:
        work: stage outputs and resumable state (build.json holds the report returned).
        out: the exported zeroft checkpoint.
        assets: where examples/ and toyworld-judge/ go.
        budget: steps and batch sizes per stage (budget.Budget).
        grow_from: a trained v1 zeroft checkpoint (lat32 only): instead of training the encoder and base stages,
            grow the lat32 model out of it (grow.py) and start the zeroft stage there; the judge is then the one
            in ``assets``/toyworld-judge when there is one (the source build's instrument, so scores stay comparable).
        defaults_from: a zeroft checkpoint whose encoder views and guidance defaults are taken instead of running
            the two sweeps (the longest step after training).
    """
    if grow_from is not None and budget.unet != "lat32":
        raise InputError("--grow-from grows a lat32 model: add --unet lat32")
    started = time.perf_counter()
    run = start_run(work, assets, budget, seed, device, workers)
    pretrain(run, grow_from)
    if until == "base":
        return run.report
    write_training_streams(run)
    final = train_zeroft(run, validation_photos(run), work / "grow" / "init" if grow_from is not None else None)
    if until == "zeroft":
        return run.report

    pipe = ZeroFTPipeline.from_pretrained(final, device=str(run.device))
    if defaults_from is not None:
        w_text, w_object = defaults_of_checkpoint(run, pipe, defaults_from)
    else:
        w_text, w_object = sweep_defaults(run, pipe)
    export(pipe, final, out, budget, w_text, w_object)
    ship_judge(run)
    run.report["wall_seconds_total_this_run"] = round(time.perf_counter() - started, 1)
    run.report["checkpoint_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    run.save()
    return run.report
