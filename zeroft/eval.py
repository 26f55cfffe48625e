"""``python -m zeroft.eval dreambench``: the DreamBench protocol for any zeroft checkpoint.

    python -m zeroft.eval dreambench --data dreambooth/dataset --checkpoint ip-adapter-sd15 --out results/

DreamBench (Ruiz et al., 2023): 30 subject folders and ``prompts_and_classes.txt`` (25 object
prompts, 25 live-subject prompts for cats and dogs), usually 4 samples per (subject, prompt).
Zero-shot methods get ONE reference photo per subject: here the first image in sorted order
(``00.jpg`` in the official release). Prompts are formatted with the class word and no
unique token ("a backpack in the jungle"). Metrics (zeroft.metrics): DINO and CLIP-I against
all real images of the subject (the published protocol) and against the reference alone,
CLIP-T against the prompt, and KID between all generated and all real images.
Public IP-Adapter weights are evaluated with ``--ip-adapter-file`` (imported as a zeroft
checkpoint; equal text and object guidance reproduce diffusers' IP-Adapter exactly).
Writes ``per_subject.csv``, ``overall.json`` and ``samples.png``.

A run takes hours at full scale, so everything that can fail does so in its first minute: the
settings, the data and the output folder are checked before any model loads, and every model
(the checkpoint's and the metrics') is loaded before the first image is generated. ``--out`` is
made only when the results are written. Bad input exits with status 2, a model that cannot be
loaded with status 3, each with one ``error:`` line, as ``python -m zeroft`` does.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from .errors import InputError, ModelUnavailableError
from .flags import ArgumentParser
from .grid import make_grid
from .metrics import CLIPScorer, DINOScorer, KIDScorer, MetricModels, mean_pairwise_cosine

LIVE_CLASSES = {"cat", "dog"}  # subjects that get the live-subject prompt list
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PROMPTS_FILE = "prompts_and_classes.txt"


@dataclass(frozen=True)
class DreamBenchConfig:
    """One DreamBench evaluation: what ``python -m zeroft.eval dreambench`` builds from its flags."""

    data: Path  # local DreamBench copy: one folder per subject and prompts_and_classes.txt
    out: Path  # results folder; made only when the results are written, so a failed run leaves none
    checkpoint: str | None = None  # zeroft checkpoint folder, Hub id or preset; None with ip_adapter_file
    ip_adapter_file: Path | None = None  # a plain IP-Adapter .safetensors, imported into a temporary checkpoint
    ip_adapter_preset: str = "ip-adapter-sd15"  # with ip_adapter_file: the base and encoder it was trained with
    base_model: str | None = None  # with ip_adapter_file: another base model of the preset's family
    samples: int = 4  # images per (subject, prompt): DreamBench's protocol uses 4
    subjects: tuple[str, ...] = ()  # only these subjects (quick runs); empty: every subject folder present
    prompts: int | None = None  # only the first N prompts of each list (quick runs); None: all of them
    text_guidance: float | None = None  # None: the checkpoint's default, as users get it
    object_guidance: float | None = None  # None: the checkpoint's default
    steps: int | None = None  # None: the checkpoint's default
    size: int | None = None  # side of the square images; None: the checkpoint's default
    seed: int = 0  # each (subject, prompt) gets its own seeds from here, so a subset reproduces the full run
    device: str | None = None  # None: the best available
    metric_models: MetricModels = field(default_factory=MetricModels)  # recorded in overall.json: papers differ


@dataclass(frozen=True)
class Subject:
    """One subject folder, read and checked before any model loads."""

    name: str  # the folder's name, as prompts_and_classes.txt lists it
    class_word: str  # what the prompts call it ("backpack", "dog")
    reference: str  # file name of the one photo the model sees: the first in sorted order
    real: tuple[Image.Image, ...]  # every photo of the subject, the reference first (RGB)
    prompts: tuple[str, ...]  # its prompt list, formatted with the class word


def parse_prompts_and_classes(path: str | Path) -> tuple[dict[str, str], list[str], list[str]]:
    """(subject → class, object prompt templates, live-subject prompt templates) from DreamBench's file.

    Raises:
        InputError: the file is missing, unreadable, or not in DreamBench's format.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is missing: a DreamBench folder holds {PROMPTS_FILE} next to its subject folders.")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"Cannot read {path} ({error}).") from None
    classes = {}
    section = text.split("Prompts", 1)[0]
    for line in section.splitlines():
        if "," in line and not line.startswith("subject_name"):
            subject, cls = line.split(",", 1)
            classes[subject.strip()] = cls.strip()
    lists = re.findall(r"prompt_list\s*=\s*\[(.*?)\]", text, flags=re.S)
    templates = [re.findall(r"'([^']*)'\.format", block) for block in lists]
    if len(templates) != 2 or not all(templates) or not classes:
        raise InputError(f"{path} is not in DreamBench's {PROMPTS_FILE} format: it needs the subject_name,class "
                         "lines and two non-empty prompt_list blocks (object prompts, then live-subject prompts).")
    for template in templates[0] + templates[1]:
        try:
            format_prompt(template, "x")
        except (IndexError, KeyError, ValueError):
            raise InputError(f"{path}: the prompt {template!r} is not a template of {{0}} (unique token) "
                             "and {1} (class word).") from None
    object_prompts, live_prompts = templates
    return classes, object_prompts, live_prompts


def format_prompt(template: str, class_word: str, unique_token: str = "") -> str:
    return " ".join(template.format(unique_token, class_word).split())


def subject_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def _read_photo(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:
        raise InputError(f"{path} is not an image file zeroft can read ({error}).") from None


def read_subjects(data: Path, only: tuple[str, ...] = (), prompts: int | None = None) -> list[Subject]:
    """The subjects to evaluate, every photo read and every prompt formatted, so bad data fails now.

    Args:
        data: the DreamBench folder.
        only: only these subjects; empty: every subject of prompts_and_classes.txt with a folder.
        prompts: only the first N prompts of each list; None: all.

    Raises:
        InputError: naming the folder, file or subject at fault.
    """
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"The DreamBench folder {str(data)!r} does not exist or is not a folder.")
    classes, object_prompts, live_prompts = parse_prompts_and_classes(data / PROMPTS_FILE)
    unknown = [s for s in only if s not in classes]
    if unknown:
        raise InputError(f"Unknown subject(s) {', '.join(unknown)}: {PROMPTS_FILE} lists {', '.join(classes)}.")
    missing = [s for s in only if not (data / s).is_dir()]
    if missing:
        raise InputError(f"No folder for the subject(s) {', '.join(missing)} in {data}.")
    names = [s for s in classes if (data / s).is_dir() and (not only or s in only)]
    if not names:
        raise InputError(f"No subject folders of {PROMPTS_FILE} found in {data}.")
    subjects = []
    for name in names:
        paths = subject_images(data / name)
        if not paths:
            raise InputError(f"The subject folder {data / name} has no images ({', '.join(SUFFIXES)}).")
        class_word = classes[name]
        templates = live_prompts if class_word in LIVE_CLASSES else object_prompts
        templates = templates[:prompts] if prompts else templates
        subjects.append(Subject(name, class_word, paths[0].name, tuple(_read_photo(p) for p in paths),
                                tuple(format_prompt(t, class_word) for t in templates)))
    return subjects


def _flagged(flag: str, check: Callable, value) -> None:
    """Run a zeroft.validation check, its message naming the command-line flag."""
    try:
        check(value)
    except InputError as error:
        raise InputError(f"{flag}: {error}") from None


def check_config(config: DreamBenchConfig) -> None:
    """Every setting, in a second: the ranges of zeroft.validation, and sizes in multiples of 8.

    Raises:
        InputError: naming the flag at fault.
    """
    from .presets import IP_ADAPTER_PRESETS
    from .validation import check_guidance, check_num_images, check_seed, check_size, check_steps

    if (config.checkpoint is None) == (config.ip_adapter_file is None):
        raise InputError("Give exactly one of --checkpoint and --ip-adapter-file.")
    if config.ip_adapter_file is None and config.base_model is not None:
        raise InputError("--base-model goes with --ip-adapter-file; a checkpoint names its own base model.")
    if config.ip_adapter_file is not None and config.ip_adapter_preset not in IP_ADAPTER_PRESETS:
        raise InputError(f"Unknown --ip-adapter-preset {config.ip_adapter_preset!r}; use one of "
                         f"{', '.join(IP_ADAPTER_PRESETS)}.")
    _flagged("--samples", check_num_images, config.samples)
    if config.prompts is not None and (isinstance(config.prompts, bool) or not isinstance(config.prompts, int)
                                       or config.prompts < 1):
        raise InputError(f"--prompts must be a whole number of at least 1, not {config.prompts!r}.")
    if config.steps is not None:
        _flagged("--steps", check_steps, config.steps)
    if config.size is not None:
        check_size("--size", config.size)
    for flag, value in (("--text-guidance", config.text_guidance), ("--object-guidance", config.object_guidance)):
        if value is not None:
            check_guidance(flag, value)
    _flagged("--seed", check_seed, config.seed)


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that could not take the results, without making it (a failed run leaves no folder).

    A real write into the nearest existing folder, as zeroft.cli checks its output folder: permissions,
    read-only mounts and a parent that is a file fail here, not after hours of generation.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is an existing file, not a folder.")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"Cannot make --out {str(out)!r}: {str(existing)!r} is a file.")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".zeroft-write-test-")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise InputError(f"Cannot write to {str(existing)!r} ({error.strerror or error}); "
                         "give an --out folder you can write to.") from None


@contextmanager
def _checkpoint(config: DreamBenchConfig) -> Iterator[str]:
    """The checkpoint to evaluate; an IP-Adapter file is imported into a temporary one, removed afterwards."""
    if config.checkpoint is not None:
        yield config.checkpoint
        return
    from .presets import IP_ADAPTER_PRESETS, import_ip_adapter

    preset = IP_ADAPTER_PRESETS[config.ip_adapter_preset]
    if config.base_model:
        preset = replace(preset, base_model=config.base_model)
    with tempfile.TemporaryDirectory(prefix="ip-adapter-") as folder:
        yield str(import_ip_adapter(Path(folder) / "checkpoint", config.ip_adapter_file, preset))


def evaluate_dreambench(config: DreamBenchConfig) -> dict:
    """Generate DreamBench's images with one checkpoint, score them and write the results to ``config.out``.

    Returns:
        the report written to overall.json.

    Raises:
        InputError: a bad setting, data folder, output folder or adapter file (before any model loads).
        ModelUnavailableError: the checkpoint's or a metric's model cannot be loaded (before any generation).
    """
    from .locate import native_size_of, resolve_checkpoint
    from .loading import load_pipeline
    from .masking import EmptyMaskError
    from .quantization import pick_device
    from .validation import check_size_for

    # 1. Check the settings, the data and the output folder: no model is needed for these
    check_config(config)
    subjects = read_subjects(config.data, config.subjects, config.prompts)
    device = pick_device(config.device)
    _check_out(config.out)
    with _checkpoint(config) as checkpoint:
        # 2. The checkpoint (a Hub checkpoint or preset is downloaded here) and the sizes it allows
        folder = resolve_checkpoint(checkpoint)
        native = native_size_of(folder)
        if config.size is not None and native is not None:
            check_size_for("--size", config.size, native, device)
        # 3. The metric models, all of them before the first image is generated
        models = config.metric_models
        clip = CLIPScorer(models.clip, models.clip_pretrained, device)
        dino = DINOScorer(models.dino, device)
        kid = KIDScorer(models.kid_features, dino)
        # 4. The pipeline, and each subject's object embedding (its masker runs here, not mid-run)
        pipe = load_pipeline(folder, device=device)
        pipe.set_progress_bar_config(disable=True)
        embeds = {}
        for subject in subjects:
            try:
                embeds[subject.name] = pipe.encode_object(subject.real[0])[0]
            except EmptyMaskError as error:
                raise InputError(f"The mask of {subject.name}'s reference photo {subject.reference} is empty "
                                 f"({error.source}): there is no object in it to encode.") from None
        # 5. Generate and score, subject by subject
        settings = None  # the first generation's, defaults filled in (every generation shares them but prompt and seed)
        rows, all_generated, all_real, grid_rows = [], [], [], []
        started = time.perf_counter()
        for index, subject in enumerate(subjects):
            generated, prompts = [], []
            for p_index, prompt in enumerate(subject.prompts):
                seed = config.seed + 1000 * index + config.samples * p_index
                result = pipe(prompt, image_embeds=embeds[subject.name], num_images=config.samples, seed=seed,
                              text_guidance=config.text_guidance, object_guidance=config.object_guidance,
                              num_inference_steps=config.steps, height=config.size, width=config.size)
                if settings is None:
                    settings = {k: v for k, v in result.settings.to_dict().items() if k not in ("prompt", "seed", "seeds")}
                    settings["samples"] = settings.pop("num_images")
                generated += result.images
                prompts += [prompt] * len(result.images)
            real = list(subject.real)
            rows.append(_score_subject(subject, generated, prompts, clip, dino))
            all_generated += generated
            all_real += real
            grid_rows.append([real[0]] + generated[: min(4, len(generated))])
            print(f"{subject.name:24s} DINO {rows[-1]['dino']:.3f}  CLIP-I {rows[-1]['clip_i']:.3f}  "
                  f"CLIP-T {rows[-1]['clip_t']:.3f}")
    # 6. KID over all images, then the results
    kid_mean, kid_std = kid(all_generated, all_real)
    metrics = ("dino", "clip_i", "clip_t", "dino_reference", "clip_i_reference")
    overall = {m: sum(r[m] for r in rows) / len(rows) for m in metrics}
    report = {
        "checkpoint": config.checkpoint or f"IP-Adapter file {config.ip_adapter_file}", "subjects": len(rows),
        "images": len(all_generated), "overall": overall, "kid": {"mean": kid_mean, "std": kid_std},
        "metric_models": asdict(models), "settings": settings, "seconds": round(time.perf_counter() - started, 1),
        "reference_rule": "first image of each subject folder in sorted order",
    }
    _write_results(config.out, rows, report, grid_rows)
    print(f"overall over {len(rows)} subjects: " + "  ".join(f"{m} {v:.3f}" for m, v in overall.items())
          + f"  KID {kid_mean:.4f}")
    return report


def _score_subject(subject: Subject, generated: list[Image.Image], prompts: list[str], clip: CLIPScorer,
                   dino: DINOScorer) -> dict:
    """One row of per_subject.csv: DINO and CLIP-I against all real photos and the reference, CLIP-T."""
    real = list(subject.real)
    generated_clip, real_clip = clip.images(generated), clip.images(real)
    generated_dino, real_dino = dino.images(generated), dino.images(real)
    text = clip.texts(prompts)
    return {
        "subject": subject.name, "class": subject.class_word, "reference": subject.reference, "images": len(generated),
        "dino": mean_pairwise_cosine(generated_dino, real_dino),
        "clip_i": mean_pairwise_cosine(generated_clip, real_clip),
        "clip_t": float((generated_clip * text).sum(-1).mean()),
        "dino_reference": mean_pairwise_cosine(generated_dino, real_dino[:1]),
        "clip_i_reference": mean_pairwise_cosine(generated_clip, real_clip[:1]),
    }


def _write_results(out: Path, rows: list[dict], report: dict, grid_rows: list[list[Image.Image]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "per_subject.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "overall.json").write_text(json.dumps(report, indent=2) + "\n")
    make_grid(grid_rows[:8], 128).save(out / "samples.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m zeroft.eval", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser("dreambench", help="evaluate on a local copy of DreamBench")
    d.add_argument("--data", required=True, help="folder with one sub-folder per subject and prompts_and_classes.txt")
    source = d.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="zeroft checkpoint folder, Hub id or preset")
    source.add_argument("--ip-adapter-file", help="a plain IP-Adapter .safetensors file (SD1.5 or SDXL)")
    d.add_argument("--ip-adapter-preset", default="ip-adapter-sd15",
                   help="with --ip-adapter-file: which preset the file belongs to (its base and encoder); "
                        "ip-adapter-sd15, ip-adapter-sdxl-vit-h or ip-adapter-sdxl")
    d.add_argument("--base-model", default=None, help="with --ip-adapter-file: another base model of the preset's family")
    d.add_argument("--out", required=True, help="results folder (made when the results are written)")
    d.add_argument("--samples", type=int, default=4, help="images per (subject, prompt)")
    d.add_argument("--subjects", nargs="*", default=None, help="only these subjects")
    d.add_argument("--prompts", type=int, default=None, help="only the first N prompts of each list")
    d.add_argument("--text-guidance", type=float, default=None)
    d.add_argument("--object-guidance", type=float, default=None)
    d.add_argument("--steps", type=int, default=None)
    d.add_argument("--size", type=int, default=None, help="side of the square images, a multiple of 8")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default=None)
    d.add_argument("--clip", default=MetricModels.clip, help="open_clip model for CLIP-I/CLIP-T (name or folder)")
    d.add_argument("--clip-pretrained", default=MetricModels.clip_pretrained)
    d.add_argument("--dino", default=MetricModels.dino, help="transformers DINO model for the DINO metric")
    d.add_argument("--kid-features", default="inception", choices=["inception", "dino"])
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> DreamBenchConfig:
    """The typed config of a parsed ``dreambench`` command line."""
    return DreamBenchConfig(
        data=Path(args.data), out=Path(args.out), checkpoint=args.checkpoint,
        ip_adapter_file=None if args.ip_adapter_file is None else Path(args.ip_adapter_file),
        ip_adapter_preset=args.ip_adapter_preset, base_model=args.base_model, samples=args.samples,
        subjects=tuple(args.subjects or ()), prompts=args.prompts, text_guidance=args.text_guidance,
        object_guidance=args.object_guidance, steps=args.steps, size=args.size, seed=args.seed, device=args.device,
        metric_models=MetricModels(args.clip, args.clip_pretrained, args.dino, args.kid_features),
    )


def main(argv=None) -> dict:
    """The command line: one ``error:`` line, then exit status 2 for bad input, 3 for a model that cannot be loaded."""
    config = config_from_args(parse_args(argv))
    try:
        with torch.no_grad():
            return evaluate_dreambench(config)
    # FileNotFoundError: zeroft.locate's for a --checkpoint that is neither a folder nor a Hub id (as zeroft.cli)
    except (InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except ModelUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
