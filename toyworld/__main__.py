"""``python -m toyworld build | ablations | recipes | tokens | copying | interval | eval | patterns | steps | personalization``: the toy world's command line.

The one place that reads flags and turns a bad request (zeroft.errors.InputError) into an
``error: ...`` line and exit status 2; every command is a function of the module named below.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from zeroft.config import CONFIG_NAME
from zeroft.errors import InputError
from zeroft.flags import ArgumentParser

from .budget import BUDGETS, QUICK, Budget
from .build import build
from .experiments.ablations import run_ablations
from .experiments.conflicts import evaluate_recipes
from .experiments.copying import ARMS, run_copying
from .experiments.interval import run_interval
from .experiments.patterns import pattern_confusions
from .experiments.personalization import personalization
from .experiments.recipes import train_recipes
from .experiments.tokens import run_tokens
from .experiments.report import EvalOptions, evaluate_checkpoint
from .experiments.steps import step_costs
from .models import UNETS

JUDGE = "assets/toyworld-judge/judge.safetensors"
DEVICE_HELP = "auto (the GPU when there is one), cpu or cuda"


def _build_parser(commands) -> None:
    b = commands.add_parser("build", help="train everything and export the embedded checkpoint (toyworld.build)")
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
    b.add_argument("--device", default="auto", help=DEVICE_HELP)
    b.add_argument("--workers", type=int, default=None,
                   help="processes rendering training scenes ahead (default: 0 on a CPU, up to 8 beside a GPU)")
    a = commands.add_parser("ablations", help="retrain the paper's ablations at one budget, after build "
                                              "(toyworld.experiments.ablations)")
    a.add_argument("--work", default="runs/toyworld")
    a.add_argument("--steps", type=int, default=2000, help="training steps of every variant")
    a.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    a.add_argument("--seed", type=int, default=0)
    r = commands.add_parser("recipes", help="the paper's recipe against IP-Adapter's at one budget, scored on conflicts "
                                            "(toyworld.experiments.recipes, .conflicts)")
    _recipe_experiment_options(r, "runs/recipes", "the shared base, the streams and the variants",
                               "the VAE and object encoder every variant shares, and the guidance every row is scored at",
                               "toyworld/results/toyworld-recipes")
    r.add_argument("--base-steps", type=int, default=1500, help="steps of the shared base model")
    r.add_argument("--steps", type=int, default=1000, help="zeroft training steps of every variant")
    r.add_argument("--only", nargs="*", default=None, help="variants to train (default: all)")
    r.add_argument("--train-only", action="store_true", help="train, do not score")
    t = commands.add_parser("tokens", help="the paper's recipe with pooled object tokens against patch tokens "
                                           "(IP-Adapter Plus's resampler), from the recipes table's base "
                                           "(toyworld.experiments.tokens)")
    _recipe_experiment_options(t, "runs/recipes", "the shared base (the recipes table's), the streams and the variants",
                               "the VAE and object encoder both variants share, and the guidance they are scored at",
                               "toyworld/results/toyworld-tokens")
    t.add_argument("--base-steps", type=int, default=1000, help="steps of the shared base model (the recipes table's)")
    t.add_argument("--steps", type=int, default=1000, help="zeroft training steps of each variant")
    t.add_argument("--train-only", action="store_true", help="train, do not score")
    c = commands.add_parser("copying", help="continue the shipped model under IP-Adapter's data recipe and the paper's, "
                                            "scored on conflicts every --score-every steps "
                                            "(toyworld.experiments.copying)")
    _recipe_experiment_options(c, "runs/copying", "the starting point, the streams and each arm's training states",
                               "the model every arm continues, and the guidance every point is scored at",
                               "toyworld/results/toyworld-copying")
    c.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to train and score, in order")
    c.add_argument("--steps", type=int, default=3000, help="further training steps of every arm")
    c.add_argument("--score-every", type=int, default=1000, help="steps between scored (saved) training states")


def _recipe_experiment_checks(args, counts: tuple[str, ...]) -> Path:
    """The checks the training-recipe experiments share (each of ``counts`` at least one, the checkpoint and the
    judge present); the checkpoint's folder."""
    for flag in counts:
        at_least_one(flag.replace("_", "-"), getattr(args, flag))
    checkpoint = checkpoint_option(args, "checkpoint")
    if not Path(args.judge).is_file():
        raise InputError(f"--judge {args.judge}: no such file")
    return checkpoint


def _recipe_experiment_options(parser, work: str, work_help: str, checkpoint_help: str, out: str) -> None:
    """The options the two training-recipe experiments (recipes, copying) share: where they work and score."""
    parser.add_argument("--work", default=work, help=work_help)
    parser.add_argument("--checkpoint", default="assets/zeroft-toy", help=checkpoint_help)
    parser.add_argument("--judge", default=JUDGE)
    parser.add_argument("--out", default=out)
    parser.add_argument("--references", type=int, default=3, help="reference photos per held-out identity (× 8 prompts)")
    parser.add_argument("--seed", type=int, default=0)


def _scoring_options(parser, work_help: str, out: str) -> None:
    """The options of every command that scores a checkpoint with the judge."""
    parser.add_argument("--checkpoint", default="assets/zeroft-toy")
    parser.add_argument("--judge", default=JUDGE)
    parser.add_argument("--work", default="runs/toyworld", help=work_help)
    parser.add_argument("--out", default=out)
    parser.add_argument("--identities", type=int, default=None,
                        help="score only the first N identities of each split (a quick look; default: all)")


def _eval_parser(commands) -> None:
    e = commands.add_parser("eval", help="score a checkpoint on held-out identities (toyworld.experiments.report)")
    _scoring_options(e, "build folder: base model, ablations, training states", "toyworld/results/toyworld")
    e.add_argument("--references", type=int, default=3, help="reference photos per held-out identity")
    e.add_argument("--finetune-objects", type=int, default=4)
    e.add_argument("--finetune-steps", type=int, default=200)
    e.add_argument("--ablation-references", type=int, default=1)
    e.add_argument("--curve", action="store_true", help="also evaluate saved training states")
    e.add_argument("--curve-points", type=int, default=8, help="at most this many states, evenly spaced")
    e.add_argument("--curve-only", action="store_true",
                   help="only the curve: score --work's saved training states, no table rows (a build still training)")
    e.add_argument("--defaults-from", default=None, metavar="CHECKPOINT",
                   help="guidance, sampler steps and encoder views of this checkpoint instead of --checkpoint's, "
                        "e.g. to score a partly trained build the way the shipped model was scored")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto", help=DEVICE_HELP)


def _benchmark_parsers(commands) -> None:
    i = commands.add_parser("interval", help="guidance only on an interval of noise levels against every step, "
                                             "shipped model (toyworld.experiments.interval)")
    _scoring_options(i, "unused (kept for the shared options)", "toyworld/results/toyworld-interval")
    i.add_argument("--references", type=int, default=3, help="reference photos per held-out identity (× 8 prompts)")
    i.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("patterns", help="can the generator draw each pattern at all? "
                                             "(toyworld.experiments.patterns)")
    _scoring_options(p, "build folder with the base model (base/base)", "toyworld/results/toyworld-patterns")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0)
    s = commands.add_parser("steps", help="cost of one base training step per UNet and batch "
                                          "(toyworld.experiments.steps)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    s.add_argument("--unets", nargs="+", default=list(UNETS), choices=UNETS)
    s.add_argument("--steps", type=int, default=10, help="timed steps, after 3 warm-up steps")
    s.add_argument("--render", type=int, default=128, help="scenes rendered once on the CPU and timed")
    s.add_argument("--precisions", nargs="+", default=["fp32"], choices=("fp32", "bf16"),
                   help="fp32, or bf16 autocast around the forward passes (what --mixed_precision bf16 does)")
    z = commands.add_parser("personalization",
                            help="one encoder pass vs per-object fine-tuning to the same score "
                                 "(toyworld.experiments.personalization)")
    z.add_argument("--checkpoint", default="assets/zeroft-toy")
    z.add_argument("--judge", default=JUDGE)
    z.add_argument("--work", default="runs/toyworld")
    z.add_argument("--objects", type=int, default=4)
    z.add_argument("--every", type=int, default=25)
    z.add_argument("--max-steps", type=int, default=400)
    z.add_argument("--seed", type=int, default=0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m toyworld",
                                     description="The toy world: build the embedded checkpoint, evaluate it, benchmark it.")
    commands = parser.add_subparsers(dest="command", required=True)
    _build_parser(commands)
    _eval_parser(commands)
    _benchmark_parsers(commands)
    return parser.parse_args(argv)


def at_least_one(option: str, value: int | None) -> None:
    """An InputError when a count flag (``--option``) is given below 1; None (not given) passes."""
    if value is not None and value < 1:
        raise InputError(f"--{option} must be at least 1, got {value}")


def budget_from_args(args: argparse.Namespace) -> Budget:
    """``--quick`` or ``--budget``, then the ``--unet`` and ``--vae-steps``/``--base-steps``/``--zeroft-steps`` overrides."""
    budget = QUICK if args.quick else BUDGETS[args.budget]
    steps = {}
    for stage in ("vae", "base", "zeroft"):
        value = getattr(args, f"{stage}_steps")
        at_least_one(f"{stage}-steps", value)
        steps[stage] = getattr(budget, stage) if value is None else value
    return replace(budget, unet=args.unet or budget.unet, **steps)


def checkpoint_option(args: argparse.Namespace, option: str) -> Path | None:
    """The folder a ``--grow-from``/``--defaults-from`` flag names, which must hold a zeroft checkpoint."""
    value = getattr(args, option)
    if value is not None and not (Path(value) / CONFIG_NAME).is_file():
        raise InputError(f"--{option.replace('_', '-')} {value}: no zeroft checkpoint there (no {CONFIG_NAME})")
    return Path(value) if value is not None else None


def run(argv=None) -> dict:
    """Run the command ``argv`` asks for; returns its report. Raises InputError for a bad request."""
    args = parse_args(argv)
    if args.command == "build":
        grow_from, defaults_from = checkpoint_option(args, "grow_from"), checkpoint_option(args, "defaults_from")
        return build(Path(args.work), Path(args.out), Path(args.assets), budget_from_args(args), args.seed,
                     args.device, args.workers, args.until, grow_from, defaults_from)
    if args.command == "ablations":
        return run_ablations(Path(args.work), args.steps, args.seed, args.only)
    if args.command == "recipes":
        checkpoint = _recipe_experiment_checks(args, ("base_steps", "steps", "references"))
        report = train_recipes(Path(args.work), checkpoint, Path(args.judge).parent, args.base_steps,
                               args.steps, args.seed, args.only)
        if not args.train_only:
            report["evaluation"] = evaluate_recipes(Path(args.work), Path(args.judge), checkpoint,
                                                    Path(args.out), args.references, args.seed)
        return report
    if args.command == "tokens":
        checkpoint = _recipe_experiment_checks(args, ("base_steps", "steps", "references"))
        return run_tokens(Path(args.work), checkpoint, Path(args.judge), Path(args.out), args.base_steps, args.steps,
                          args.references, args.seed, args.train_only)
    if args.command == "copying":
        checkpoint = _recipe_experiment_checks(args, ("steps", "score_every", "references"))
        if args.steps % args.score_every:
            raise InputError(f"--steps {args.steps} must be a multiple of --score-every {args.score_every}")
        return run_copying(Path(args.work), checkpoint, Path(args.judge), Path(args.out), args.arms, args.steps,
                           args.score_every, args.references, args.seed)
    if args.command == "eval":
        at_least_one("identities", args.identities)
        return evaluate_checkpoint(EvalOptions(**{k: v for k, v in vars(args).items() if k != "command"}))
    if args.command == "interval":
        at_least_one("identities", args.identities)
        at_least_one("references", args.references)
        checkpoint = checkpoint_option(args, "checkpoint")
        if not Path(args.judge).is_file():
            raise InputError(f"--judge {args.judge}: no such file")
        return run_interval(checkpoint, Path(args.judge), Path(args.out), args.references, args.seed, args.identities)
    if args.command == "patterns":
        at_least_one("identities", args.identities)
        return pattern_confusions(args.checkpoint, args.judge, args.work, args.out, args.steps, args.seed,
                                  args.identities)
    if args.command == "steps":
        return step_costs(args.device, args.batches, args.unets, args.steps, args.render, args.precisions)
    return personalization(args.checkpoint, args.judge, args.work, args.objects, args.every, args.max_steps,
                           args.seed)


def main(argv=None) -> int:
    """``run``, with a bad request (InputError) turned into one ``error: ...`` line on stderr and exit status 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        run(argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # worker processes that import this module must not start a command
    sys.exit(main())
