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
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image

from .errors import InputError
from .grid import make_grid
from .metrics import CLIPScorer, DINOScorer, KIDScorer, MetricModels, mean_pairwise_cosine

LIVE_CLASSES = {"cat", "dog"}  # subjects that get the live-subject prompt list
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def parse_prompts_and_classes(path: str | Path) -> tuple[dict[str, str], list[str], list[str]]:
    """(subject → class, object prompt templates, live-subject prompt templates) from DreamBench's file."""
    text = Path(path).read_text()
    classes = {}
    section = text.split("Prompts", 1)[0]
    for line in section.splitlines():
        if "," in line and not line.startswith("subject_name"):
            subject, cls = line.split(",", 1)
            classes[subject.strip()] = cls.strip()
    lists = re.findall(r"prompt_list\s*=\s*\[(.*?)\]", text, flags=re.S)
    if len(lists) != 2 or not classes:
        raise ValueError(f"{path} is not in DreamBench's prompts_and_classes.txt format")
    object_prompts, live_prompts = ([m for m in re.findall(r"'([^']*)'\.format", block)] for block in lists)
    return classes, object_prompts, live_prompts


def format_prompt(template: str, class_word: str, unique_token: str = "") -> str:
    return " ".join(template.format(unique_token, class_word).split())


def subject_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zeroft.eval", description=__doc__.splitlines()[0])
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
    d.add_argument("--out", required=True)
    d.add_argument("--samples", type=int, default=4, help="images per (subject, prompt)")
    d.add_argument("--subjects", nargs="*", default=None, help="only these subjects")
    d.add_argument("--prompts", type=int, default=None, help="only the first N prompts of each list")
    d.add_argument("--text-guidance", type=float, default=None)
    d.add_argument("--object-guidance", type=float, default=None)
    d.add_argument("--steps", type=int, default=None)
    d.add_argument("--size", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default=None)
    d.add_argument("--clip", default=MetricModels.clip, help="open_clip model for CLIP-I/CLIP-T (name or folder)")
    d.add_argument("--clip-pretrained", default=MetricModels.clip_pretrained)
    d.add_argument("--dino", default=MetricModels.dino, help="transformers DINO model for the DINO metric")
    d.add_argument("--kid-features", default="inception", choices=["inception", "dino"])
    return parser.parse_args(argv)


def _checkpoint(args) -> str:
    if args.checkpoint:
        return args.checkpoint
    from dataclasses import replace

    from .presets import IP_ADAPTER_PRESETS, import_ip_adapter

    if args.ip_adapter_preset not in IP_ADAPTER_PRESETS:
        raise InputError(f"Unknown --ip-adapter-preset {args.ip_adapter_preset!r}; use one of "
                         f"{', '.join(IP_ADAPTER_PRESETS)}.")
    preset = IP_ADAPTER_PRESETS[args.ip_adapter_preset]
    if args.base_model:
        preset = replace(preset, base_model=args.base_model)
    return str(import_ip_adapter(tempfile.mkdtemp(prefix="ip-adapter-"), args.ip_adapter_file, preset))


def evaluate_dreambench(args) -> dict:
    from .loading import load_pipeline
    from .quantization import pick_device

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes, object_prompts, live_prompts = parse_prompts_and_classes(data / "prompts_and_classes.txt")
    subjects = [s for s in classes if (data / s).is_dir() and (not args.subjects or s in args.subjects)]
    if not subjects:
        raise InputError(f"no subject folders of prompts_and_classes.txt found in {data}")
    device = pick_device(args.device)
    pipe = load_pipeline(_checkpoint(args), device=device)
    pipe.set_progress_bar_config(disable=True)
    models = MetricModels(args.clip, args.clip_pretrained, args.dino, args.kid_features)
    clip, dino = CLIPScorer(models.clip, models.clip_pretrained, device), DINOScorer(models.dino, device)
    settings = None  # the first generation's, defaults filled in (every generation shares them but prompt and seed)
    rows, all_generated, all_real, grid_rows = [], [], [], []
    started = time.perf_counter()
    for index, subject in enumerate(subjects):
        class_word = classes[subject]
        templates = live_prompts if class_word in LIVE_CLASSES else object_prompts
        templates = templates[: args.prompts] if args.prompts else templates
        real_paths = subject_images(data / subject)
        reference = Image.open(real_paths[0]).convert("RGB")
        real = [Image.open(p).convert("RGB") for p in real_paths]
        embeds = pipe.encode_object(reference)[0]
        generated, prompts = [], []
        for p_index, template in enumerate(templates):
            prompt = format_prompt(template, class_word)
            seed = args.seed + 1000 * index + args.samples * p_index
            result = pipe(prompt, image_embeds=embeds, num_images=args.samples, seed=seed,
                       text_guidance=args.text_guidance, object_guidance=args.object_guidance,
                       num_inference_steps=args.steps, height=args.size, width=args.size)
            if settings is None:
                settings = {k: v for k, v in result.settings.to_dict().items() if k not in ("prompt", "seed", "seeds")}
                settings["samples"] = settings.pop("num_images")
            generated += result.images
            prompts += [prompt] * len(result.images)
        generated_clip, real_clip = clip.images(generated), clip.images(real)
        generated_dino, real_dino = dino.images(generated), dino.images(real)
        text = clip.texts(prompts)
        rows.append({
            "subject": subject, "class": class_word, "reference": real_paths[0].name, "images": len(generated),
            "dino": mean_pairwise_cosine(generated_dino, real_dino),
            "clip_i": mean_pairwise_cosine(generated_clip, real_clip),
            "clip_t": float((generated_clip * text).sum(-1).mean()),
            "dino_reference": mean_pairwise_cosine(generated_dino, real_dino[:1]),
            "clip_i_reference": mean_pairwise_cosine(generated_clip, real_clip[:1]),
        })
        all_generated += generated
        all_real += real
        grid_rows.append([reference] + generated[: min(4, len(generated))])
        print(f"{subject:24s} DINO {rows[-1]['dino']:.3f}  CLIP-I {rows[-1]['clip_i']:.3f}  CLIP-T {rows[-1]['clip_t']:.3f}")
    kid_mean, kid_std = KIDScorer(models.kid_features, dino)(all_generated, all_real)
    metrics = ("dino", "clip_i", "clip_t", "dino_reference", "clip_i_reference")
    overall = {m: sum(r[m] for r in rows) / len(rows) for m in metrics}
    report = {
        "checkpoint": args.checkpoint or f"IP-Adapter file {args.ip_adapter_file}", "subjects": len(rows),
        "images": len(all_generated), "overall": overall, "kid": {"mean": kid_mean, "std": kid_std},
        "metric_models": asdict(models), "settings": settings, "seconds": round(time.perf_counter() - started, 1),
        "reference_rule": "first image of each subject folder in sorted order",
    }
    with open(out / "per_subject.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "overall.json").write_text(json.dumps(report, indent=2) + "\n")
    make_grid(grid_rows[:8], 128).save(out / "samples.png")
    print(f"overall over {len(rows)} subjects: " + "  ".join(f"{m} {v:.3f}" for m, v in overall.items())
          + f"  KID {kid_mean:.4f}")
    return report


def main(argv=None) -> dict:
    """The command line: a bad request prints one ``error:`` line and exits with status 2."""
    args = parse_args(argv)
    try:
        with torch.no_grad():
            return evaluate_dreambench(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
