"""``python -m train.prepare``: raw photos → training records with captions, attributes and masks.

    python -m train.prepare --input photos/ --output data/pets-prepared [--format parquet|wds]

Inputs: a folder (one sub-folder per identity, or photos directly inside for general-domain
data), a CSV/JSONL manifest (an image path column, optional identity, attribute and mask
columns), or a Hugging Face ``datasets`` source. Each photo gets a coarse caption (a captioning
model, or the class name with ``--caption classname``, the paper's baseline), attribute
phrases (dataset columns through a vocabulary, or zero-shot open_clip), and a mask (given, or
automatic). Photos whose mask is empty or covers everything are flagged and left out of the
training records; unreadable files are skipped; both are listed in ``summary.json``.

Re-running is incremental: every processed photo is appended to ``progress.jsonl`` under the
hash of its content (and identity), so an interrupted run loses nothing and a rerun only does
what is missing. The output (``data.parquet`` + ``images/`` + ``masks/``, or WebDataset shards)
is rebuilt from that log at the end of every run, so ``train.train`` reads it directly.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from zeroft.errors import InputError
from zeroft.flags import ArgumentParser
from zeroft.images import load_image
from zeroft.masking import DEFAULT_MASKER, Masker, choose_mask

from .captions import DEFAULT_CAPTIONER, Captioner, Vocabulary, ZeroShotAttributes, combine

logger = logging.getLogger(__name__)
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MIN_COVERAGE, MAX_COVERAGE = 0.01, 0.99  # masks outside this fraction of the photo are flagged


@dataclass
class RawItem:
    source: str  # where the photo came from (path or dataset row), for the summary
    load: object  # path, bytes or PIL image
    identity: str | None
    attributes: dict
    mask: object | None  # path, bytes or PIL mask when the input has one


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def iter_folder(root: Path) -> Iterator[RawItem]:
    """Sub-folders are identities; photos directly in ``root`` have no identity."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith("."):
            identity = path.parent.name if path.parent != root else None
            yield RawItem(str(path), path, identity, {}, None)


def iter_manifest(path: Path, image_column: str, identity_column: str, mask_column: str) -> Iterator[RawItem]:
    rows = (list(csv.DictReader(path.open())) if path.suffix == ".csv"
            else [json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    for row in rows:
        if image_column not in row:
            raise InputError(f"{path.name}: a row has no {image_column!r} column")
        image = path.parent / row[image_column]
        mask = path.parent / row[mask_column] if row.get(mask_column) else None
        attributes = {k: v for k, v in row.items() if k not in (image_column, identity_column, mask_column)}
        yield RawItem(str(image), image, row.get(identity_column) or None, attributes, mask)


def iter_dataset(name: str, split: str, image_column: str, identity_column: str, mask_column: str) -> Iterator[RawItem]:
    import datasets

    dataset = datasets.load_dataset(name, split=split)
    for index, row in enumerate(dataset):
        attributes = {k: v for k, v in row.items() if k not in (image_column, identity_column, mask_column)
                      and isinstance(v, (int, float, str, bool))}
        identity = row.get(identity_column)
        yield RawItem(f"{name}[{index}]", row[image_column], None if identity is None else str(identity), attributes,
                      row.get(mask_column))


@dataclass(frozen=True)
class PrepareConfig:
    """What ``python -m train.prepare`` is asked to do; each field is the flag of that name (parse_args)."""

    input: str  # a folder of identity sub-folders, a CSV/JSONL manifest, or a datasets source
    output: str  # where images/, masks/, the records and progress.jsonl go
    format: str = "parquet"  # "parquet", or "wds" (WebDataset shards)
    shard_size: int = 1000  # records per WebDataset shard
    split: str = "train"  # the datasets split
    image_column: str = "image"
    identity_column: str = "identity"
    mask_column: str = "mask"
    caption: str = "vlm"  # "vlm": captioner + attribute phrases; "classname": 'a photo of a <class>' (the paper's baseline)
    class_name: str = "object"  # the class word of caption "classname"
    captioner: str = DEFAULT_CAPTIONER  # transformers image-text-to-text model (Hub id or folder)
    caption_prompt: str | None = None  # the text prompt of captioners that take one
    vocabulary: str | None = None  # JSON attribute vocabulary (train.captions)
    zero_shot_model: str | None = None  # open_clip model name or folder for zero-shot attributes
    zero_shot_pretrained: str | None = None  # its open_clip pretrained tag
    masker: str = DEFAULT_MASKER  # automatic masks: "rembg:<model>" or "border"
    batch_size: int = 8  # photos captioned and masked at once


def iter_input(config: PrepareConfig) -> Iterator[RawItem]:
    path = Path(config.input)
    if path.is_dir():
        return iter_folder(path)
    if path.is_file() and path.suffix in (".csv", ".jsonl", ".json"):
        return iter_manifest(path, config.image_column, config.identity_column, config.mask_column)
    return iter_dataset(config.input, config.split, config.image_column, config.identity_column, config.mask_column)


def item_key(item: RawItem) -> str:
    """Content hash (+ identity): the same photo under two identities is two records."""
    if isinstance(item.load, Path):
        digest = _file_digest(item.load)
    elif isinstance(item.load, (bytes, bytearray)):
        digest = hashlib.sha256(item.load).hexdigest()
    else:
        from zeroft.cache import image_digest

        digest = image_digest(item.load.convert("RGB"))
    return hashlib.sha256(f"{digest}|{item.identity}".encode()).hexdigest()[:32]


class Preparer:
    """Captions, attributes and masks for batches of photos, appended to the progress log."""

    def __init__(self, config: PrepareConfig):
        self.config = config
        self.output = Path(config.output)
        self.captioner = Captioner(config.captioner, prompt=config.caption_prompt) if config.caption == "vlm" else None
        self.vocabulary = Vocabulary.load(config.vocabulary) if config.vocabulary else Vocabulary()
        self.zero_shot = None
        if config.zero_shot_model and self.vocabulary.groups:
            self.zero_shot = ZeroShotAttributes(self.vocabulary, config.zero_shot_model, config.zero_shot_pretrained)
        self.masker = Masker(config.masker)

    def process(self, batch: list[tuple[str, RawItem]]) -> tuple[list[dict], list[dict]]:
        """Returns (records, skipped) for one batch."""
        loaded, skipped = [], []
        for key, item in batch:
            try:
                photo = load_image(item.load, "photo")
            except (InputError, OSError) as error:
                skipped.append({"source": item.source, "reason": str(error)})
                continue
            loaded.append((key, item, photo))
        if not loaded:
            return [], skipped
        images = [photo.rgb for _, _, photo in loaded]
        if self.config.caption == "vlm":
            coarse = self.captioner(images)
        else:
            coarse = [f"a photo of a {self.config.class_name}"] * len(images)
        fine_zero_shot = self.zero_shot(images) if self.zero_shot else [[] for _ in images]
        records = []
        for (key, item, photo), c_c, zero_shot in zip(loaded, coarse, fine_zero_shot):
            fine = self.vocabulary.phrases_from_columns(item.attributes) + zero_shot
            if self.config.caption == "classname":
                fine = []
            try:
                mask = choose_mask(photo, item.mask, self.masker, allow_empty=True).mask  # flagged below
            except (InputError, OSError) as error:  # an unreadable mask, or one drawn on another photo
                skipped.append({"source": item.source, "reason": str(error)})
                continue
            coverage = float((mask >= 0.5).mean())
            flag = "empty mask" if coverage < MIN_COVERAGE else "mask covers the whole photo" if coverage > MAX_COVERAGE else ""
            (self.output / "images").mkdir(parents=True, exist_ok=True)
            (self.output / "masks").mkdir(parents=True, exist_ok=True)
            photo.rgb.save(self.output / "images" / f"{key}.png")
            Image.fromarray((mask * 255).round().astype(np.uint8)).save(self.output / "masks" / f"{key}.png")
            records.append({
                "key": key, "source": item.source, "identity": item.identity, "image": f"images/{key}.png",
                "mask": f"masks/{key}.png", "caption_coarse": c_c, "caption_fine": ", ".join(fine),
                "caption": combine(c_c, fine), "mask_coverage": round(coverage, 4), "flagged": flag,
            })
        return records, skipped


def read_progress(path: Path) -> tuple[dict[str, dict], list[dict]]:
    """Records by key and skipped items from the log; a torn last line (a kill mid-write) is cut off."""
    records, skipped = {}, []
    if path.is_file():
        text = path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
            path.write_text(text)
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("skipped"):
                skipped.append(entry["skipped"])
            else:
                records[entry["key"]] = entry
    return records, skipped


def _append(path: Path, entries: list[dict]) -> None:
    with path.open("a") as log:
        for entry in entries:
            log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())


def write_output(output: Path, records: list[dict], fmt: str, shard_size: int) -> None:
    usable = [r for r in records if not r["flagged"]]
    columns = ("image", "mask", "caption", "caption_coarse", "caption_fine", "identity", "source", "key")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [r[c] for r in usable] for c in columns})
        temp = output / "data.parquet.tmp"
        pq.write_table(table, temp)
        temp.replace(output / "data.parquet")
        return
    shards = output / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for old in shards.glob("*.tar"):
        old.unlink()
    for start in range(0, len(usable), shard_size):
        with tarfile.open(shards / f"shard-{start // shard_size:05d}.tar", "w") as tar:
            for record in usable[start:start + shard_size]:
                tar.add(output / record["image"], arcname=f"{record['key']}.png")
                tar.add(output / record["mask"], arcname=f"{record['key']}.mask.png")
                meta = json.dumps({k: record[k] for k in ("caption", "caption_coarse", "caption_fine", "identity")}).encode()
                info = tarfile.TarInfo(f"{record['key']}.json")
                info.size = len(meta)
                tar.addfile(info, io.BytesIO(meta))


def summarise(records: list[dict], skipped: list[dict], seconds: float, processed_now: int) -> dict:
    per_identity: dict[str, int] = {}
    for r in records:
        if r["identity"] is not None and not r["flagged"]:
            per_identity[r["identity"]] = per_identity.get(r["identity"], 0) + 1
    lengths = [len(r["caption"].split()) for r in records if not r["flagged"]]
    counts = list(per_identity.values())
    return {
        "records": len(records), "usable": sum(not r["flagged"] for r in records),
        "flagged": [{"source": r["source"], "reason": r["flagged"]} for r in records if r["flagged"]],
        "skipped_unreadable": skipped, "identities": len(per_identity),
        "images_per_identity": {"min": min(counts), "mean": round(float(np.mean(counts)), 2), "max": max(counts)} if counts else None,
        "single_image_identities": sorted(i for i, n in per_identity.items() if n < 2),
        "caption_words": {"min": min(lengths), "mean": round(float(np.mean(lengths)), 2), "max": max(lengths)} if lengths else None,
        "processed_this_run": processed_now, "seconds_this_run": round(seconds, 1),
        "images_per_second_this_run": round(processed_now / seconds, 3) if seconds > 0 and processed_now else None,
    }


DEFAULTS = {f.name: f.default for f in fields(PrepareConfig)}


def parse_args(argv=None) -> argparse.Namespace:
    # defaults from PrepareConfig, the one place they are written
    p = ArgumentParser(prog="python -m train.prepare", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="folder, CSV/JSONL manifest, or datasets source")
    p.add_argument("--output", required=True)
    p.add_argument("--format", default=DEFAULTS["format"], choices=["parquet", "wds"], help="records as parquet, or WebDataset shards")
    p.add_argument("--shard_size", type=int, default=DEFAULTS["shard_size"], help="records per WebDataset shard")
    p.add_argument("--split", default=DEFAULTS["split"])
    p.add_argument("--image_column", default=DEFAULTS["image_column"])
    p.add_argument("--identity_column", default=DEFAULTS["identity_column"])
    p.add_argument("--mask_column", default=DEFAULTS["mask_column"])
    p.add_argument("--caption", default=DEFAULTS["caption"], choices=["vlm", "classname"],
                   help="vlm: captioning model + attribute phrases; classname: 'a photo of a <class>' (the paper's baseline)")
    p.add_argument("--class_name", default=DEFAULTS["class_name"], help="the class word for --caption classname")
    p.add_argument("--captioner", default=DEFAULTS["captioner"], help="transformers image-text-to-text model (Hub id or folder)")
    p.add_argument("--caption_prompt", default=DEFAULTS["caption_prompt"], help="text prompt for captioners that take one")
    p.add_argument("--vocabulary", default=DEFAULTS["vocabulary"], help="JSON attribute vocabulary (see train.captions)")
    p.add_argument("--zero_shot_model", default=DEFAULTS["zero_shot_model"], help="open_clip model name or folder for zero-shot attributes")
    p.add_argument("--zero_shot_pretrained", default=DEFAULTS["zero_shot_pretrained"], help="open_clip pretrained tag")
    p.add_argument("--masker", default=DEFAULTS["masker"], help="automatic masks: rembg:<model> | border")
    p.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """The command line: flags into a PrepareConfig, then :func:`run`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(PrepareConfig(**vars(parse_args(argv))))


def run(config: PrepareConfig) -> dict:
    """Prepare ``config.input`` into records in ``config.output``, resuming what an earlier run left; returns the
    summary (also written to summary.json)."""
    import time

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    progress = output / "progress.jsonl"
    done, skipped = read_progress(progress)
    skipped_sources = {s["source"] for s in skipped}
    todo = []
    for item in iter_input(config):
        try:
            key = item_key(item)
        except OSError as error:
            if item.source not in skipped_sources:
                _append(progress, [{"skipped": {"source": item.source, "reason": str(error)}}])
                skipped.append({"source": item.source, "reason": str(error)})
            continue
        if key not in done and item.source not in skipped_sources:
            todo.append((key, item))
    started = time.perf_counter()
    if todo:
        preparer = Preparer(config)
        for start in tqdm(range(0, len(todo), config.batch_size), desc="preparing", unit="batch"):
            records, bad = preparer.process(todo[start:start + config.batch_size])
            _append(progress, records + [{"skipped": s} for s in bad])
            done.update({r["key"]: r for r in records})
            skipped += bad
    seconds = time.perf_counter() - started
    records = sorted(done.values(), key=lambda r: (str(r["identity"]), r["source"]))
    if not records:
        raise SystemExit("no usable photos in the input")
    write_output(output, records, config.format, config.shard_size)
    summary = summarise(records, skipped, seconds, len(todo))
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["single_image_identities"]:
        logger.warning(f"{len(summary['single_image_identities'])} identities have one usable photo; "
                       "cross-reference regularization needs two")
    logger.info(f"{summary['usable']} usable records in {output} ({len(summary['flagged'])} flagged, "
                f"{len(skipped)} unreadable)")
    return summary


if __name__ == "__main__":
    main()
