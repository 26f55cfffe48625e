"""Command line: ``python -m zeroft generate | mask | import-ip-adapter``.

Bad input prints one plain ``error:`` line and exits with status 2; a model that cannot be
loaded (no Hub, no rembg model file) exits with status 3. Everything that can be checked without
the model (files, settings, device, masker, output size, a writable output folder) is checked
before it loads. Outputs never overwrite earlier runs: each run takes the next free number.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
import uuid
from pathlib import Path

from .errors import InputError, ModelUnavailableError
from .flags import ArgumentParser
from .presets import EMBEDDED_CHECKPOINT, IP_ADAPTER_PRESETS, PRESET_NAMES

logger = logging.getLogger("zeroft")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m zeroft", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="images of the object in a photo, in the scene a prompt describes")
    gen.add_argument("--checkpoint", default=None,
                     help=f"checkpoint folder, Hub repo id or preset ({', '.join(PRESET_NAMES)}; the real-scale "
                          f"presets want a CUDA GPU); default: the embedded {EMBEDDED_CHECKPOINT.name}")
    gen.add_argument("--image", required=True, nargs="+", help="reference photo(s) of ONE object")
    gen.add_argument("--mask", nargs="+", default=None, help="mask(s) for the photo(s); white marks the object")
    gen.add_argument("--prompt", required=True, help="the scene to put the object in")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument("--text-guidance", type=float, default=None, help="w_text, 0..30 (default: the checkpoint's)")
    gen.add_argument("--object-guidance", type=float, default=None, help="w_obj, 0..30 (default: the checkpoint's)")
    gen.add_argument("--embedded-guidance", type=float, default=None, metavar="G",
                     help="FLUX.1-dev only: the distilled guidance g that carries the text (default 3.5)")
    gen.add_argument("--steps", type=int, default=None)
    gen.add_argument("--guidance-interval", nargs="+", default=None, metavar="LO HI | off",
                     help="guide only at steps whose noise level sigma is in (LO, HI], one branch elsewhere: cheaper; "
                          "0.28 5.42 is Kynkaanniemi et al.'s SD-XL interval; off: every step (default: the checkpoint's)")
    gen.add_argument("--seed", type=int, default=None, help="default: random (recorded in the settings JSON)")
    gen.add_argument("--height", type=int, default=None)
    gen.add_argument("--width", type=int, default=None)
    gen.add_argument("--quantization", default="none", choices=["none", "int8", "bnb-8bit", "bnb-4bit"])
    gen.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    gen.add_argument("--offload", action="store_true", help="model CPU offload (CUDA only)")
    gen.add_argument("--masker", default=None, help="override the automatic masker: border | rembg:<model>")
    gen.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                     help="refuse a request estimated to take longer on this machine (default: no limit)")
    gen.add_argument("--out", required=True, help="output folder")

    mask = commands.add_parser("mask", help="write the automatic object mask of a photo")
    mask.add_argument("image")
    mask.add_argument("--out", required=True, help="mask PNG to write")
    mask.add_argument("--masker", default=None, help="border | rembg:<model> (default: the checkpoint's)")
    mask.add_argument("--checkpoint", default=None, help="take the masker from this checkpoint")

    imp = commands.add_parser("import-ip-adapter", help="make a checkpoint from public IP-Adapter weights")
    imp.add_argument("--out", required=True)
    imp.add_argument("--preset", default="ip-adapter-sd15", choices=list(IP_ADAPTER_PRESETS),
                     help="which public weights (the SDXL ones want a CUDA GPU: minutes per step on a CPU)")
    imp.add_argument("--adapter-file", default=None,
                     help="a local copy of the preset's adapter file, e.g. ip-adapter_sd15.safetensors (default: download)")
    return parser.parse_args(argv)


def _checkpoint(name: str | None) -> str:
    if name is not None:
        return name
    if not EMBEDDED_CHECKPOINT.is_dir():
        raise InputError(f"The embedded checkpoint {EMBEDDED_CHECKPOINT} is missing; pass --checkpoint.")
    return str(EMBEDDED_CHECKPOINT)


def _next_run(out: Path) -> int:
    taken = [int(p.stem.split("_")[1]) for p in out.glob("zeroft_*.json") if p.stem.split("_")[1].isdigit()]
    return max(taken, default=0) + 1


def _check_writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` and write and remove a probe file in it, so an unwritable --out fails now.

    A real write rather than ``os.access``: permissions, read-only mounts, a full disk and a
    parent that is a file all fail here the way the final save would.
    """
    if folder.exists() and not folder.is_dir():
        raise InputError(f"The {what} {str(folder)!r} is an existing file, not a folder.")
    probe = folder / f".zeroft-write-test-{uuid.uuid4().hex}"
    made = next((p for p in [*reversed(folder.absolute().parents), folder.absolute()] if not p.exists()), None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.remove(probe)
    except OSError as error:
        raise InputError(f"Cannot write to the {what} {str(folder)!r} ({error.strerror or error}); "
                         "give a folder you can write to.") from None
    finally:
        if made is not None and made.is_dir():  # what the check made goes again: a later refusal leaves nothing
            shutil.rmtree(made, ignore_errors=True)


def _check_before_loading(args: argparse.Namespace, checkpoint: str) -> Path:
    """Fail on bad files, settings, device, masker or output folder in a second, not after loading the model.

    Returns the checkpoint's local folder (a Hub checkpoint is downloaded here, once).
    """
    from .locate import native_size_of, resolve_checkpoint
    from .images import load_image, load_mask
    from .masking import Masker
    from .memory import check_fits
    from .quantization import pick_device, pick_dtype
    from .validation import (check_guidance, check_num_images, check_prompt, check_seed, check_size, check_size_for,
                             check_steps)

    if args.mask is not None and len(args.mask) != len(args.image):
        raise InputError(f"Got {len(args.image)} photos but {len(args.mask)} masks; give one mask per photo.")
    for path in args.image:
        load_image(path, "reference photo")
    for path in args.mask or []:
        load_mask(path)
    check_prompt("prompt", args.prompt)
    check_prompt("negative prompt", args.negative_prompt)
    check_num_images(args.num_images)
    check_seed(args.seed)
    for name, value in (("text guidance", args.text_guidance), ("object guidance", args.object_guidance)):
        if value is not None:
            check_guidance(name, value)
    if args.embedded_guidance is not None:
        check_guidance("embedded guidance", args.embedded_guidance)
    if args.steps is not None:
        check_steps(args.steps)
    args.guidance_interval = _guidance_interval(args.guidance_interval)
    if args.time_budget is not None and not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise InputError(f"--time-budget must be a positive number of seconds, not {args.time_budget:g}.")
    if args.masker is not None:
        Masker(args.masker)  # parses the spec; a rembg model loads only when a photo needs it
    device = pick_device(args.device)
    check_fits(checkpoint, device, pick_dtype(device), args.quantization)  # too big for this CPU: before downloading
    folder = resolve_checkpoint(checkpoint)
    if args.embedded_guidance is not None:
        from .config import ZeroFTConfig

        backbone = ZeroFTConfig.load(folder).backbone
        if backbone != "flux":
            raise InputError(f"--embedded-guidance is FLUX.1-dev's distilled guidance; {checkpoint} is a {backbone} "
                             "model: use --text-guidance.")
    native = native_size_of(folder)
    for name, value in (("height", args.height), ("width", args.width)):
        if value is None:
            continue
        if native is None:
            check_size(name, value)  # the limit for this model is checked once it has loaded
        else:
            check_size_for(name, value, native, device)
    _check_writable_folder(Path(args.out), "output folder")
    return folder


def _guidance_interval(words: list[str] | None):
    """--guidance-interval's words as the pipeline takes them: None (the checkpoint's), "off", or (lo, hi) checked."""
    from .guidance import check_interval

    if words is None:
        return None
    if len(words) == 1 and words[0].lower() == "off":
        return "off"
    try:
        numbers = tuple(float(word) for word in words)
    except ValueError:
        numbers = None
    if numbers is None or len(numbers) != 2:
        raise InputError(f"--guidance-interval takes two noise levels LO HI (like 0.28 5.42) or off, not {' '.join(words)}.")
    return check_interval(numbers)


def generate(args: argparse.Namespace) -> Path:
    from PIL import Image
    from tqdm import tqdm

    from .loading import load_pipeline

    checkpoint = _checkpoint(args.checkpoint)
    folder = _check_before_loading(args, checkpoint)
    seed = random.randrange(2**31) if args.seed is None else args.seed
    pipe = load_pipeline(folder, device=args.device, quantization=args.quantization, offload=args.offload,
                         masker=args.masker)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    # No total until the pipeline reports the scheduler's count of UNet calls: PNDM makes steps + 1.
    with tqdm(total=None, desc="generating", unit="step") as bar:

        def progress(step: int, total: int) -> None:
            bar.total = total
            bar.update(step - bar.n)

        output = pipe(
            args.prompt, object_image=args.image, object_mask=args.mask, negative_prompt=args.negative_prompt,
            text_guidance=args.text_guidance, object_guidance=args.object_guidance, num_images=args.num_images,
            num_inference_steps=args.steps, seed=seed, height=args.height, width=args.width, callback=progress,
            time_budget=args.time_budget, guidance_interval=args.guidance_interval,
            **({} if args.embedded_guidance is None else {"embedded_guidance": args.embedded_guidance}),
        )
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = _next_run(out)
    files = []
    for index, (image, image_seed) in enumerate(zip(output.images, output.seeds)):
        path = out / f"zeroft_{run:03d}_{index}_seed{image_seed}.png"
        image.save(path)
        files.append(path.name)
    for index, mask in enumerate(output.masks):
        Image.fromarray((mask * 255).round().astype("uint8")).save(out / f"zeroft_{run:03d}_mask{index}.png")
    settings = {"checkpoint": checkpoint, "images": [str(p) for p in args.image], "mask_files": args.mask,
                **output.settings.to_dict(), "seconds": round(seconds, 3), "outputs": files}
    (out / f"zeroft_{run:03d}.json").write_text(json.dumps(settings, indent=2) + "\n")
    print(f"wrote {len(files)} image(s) and zeroft_{run:03d}.json to {out} in {seconds:.1f} s")
    return out


def mask(args: argparse.Namespace) -> Path:
    from PIL import Image

    from .config import ZeroFTConfig
    from .images import load_image
    from .masking import EmptyMaskError, Masker, choose_mask

    spec = args.masker
    if spec is None:
        from .locate import resolve_checkpoint

        spec = ZeroFTConfig.load(resolve_checkpoint(_checkpoint(args.checkpoint))).masker
    masker = Masker(spec)
    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give the path of the mask PNG to write.")
    _check_writable_folder(out.parent, "folder of --out")
    photo = load_image(args.image)
    try:
        matte = choose_mask(photo, masker=masker).mask
    except EmptyMaskError as error:
        raise InputError(_empty_mask_advice(error.source, masker.spec)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((matte * 255).round().astype("uint8")).save(out)
    print(f"wrote {out} ({photo.rgb.width}x{photo.rgb.height}, object covers {float((matte >= 0.5).mean()):.1%})")
    return out


def _empty_mask_advice(source: str | None, spec: str) -> str:
    """What ``zeroft mask`` says when the mask it made marks nothing.

    Its own words, not the library's: the library's advice is for ``generate`` (give --mask), and
    this command takes no mask, it makes one.
    """
    from .masking import DEFAULT_MASKER

    if source == "alpha":
        return ("The photo's transparency, which zeroft takes as its mask, hides the whole photo. Use a copy of "
                "the photo without transparency to get the automatic mask.")
    others = " or ".join(s for s in ("border", DEFAULT_MASKER) if s != spec)
    return (f"The automatic mask is empty: the {spec} masker found no object in this photo. Try another masker "
            f"(--masker {others}), or paint the mask yourself and give it to zeroft generate with --mask.")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "generate":
            generate(args)
        elif args.command == "mask":
            mask(args)
        else:
            from .presets import import_ip_adapter

            print(f"wrote {import_ip_adapter(args.out, args.adapter_file, IP_ADAPTER_PRESETS[args.preset])}")
    except (InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModelUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0
