"""Random-access tables of training records from Hugging Face datasets or WebDataset shards.

A source is one of:
- a local folder of WebDataset ``.tar`` shards (samples grouped by key: ``KEY.png|jpg|webp``,
  ``KEY.json`` with the text columns, optional ``KEY.mask.png``);
- a local folder or file that ``datasets.load_dataset`` reads: parquet, JSON lines, CSV
  (image columns may hold paths relative to the data folder), or an ``imagefolder`` with
  ``metadata.jsonl``;
- a Hugging Face Hub dataset name (``org/name``), loaded with ``datasets.load_dataset``.

Every source becomes a :class:`RecordTable`: ``len(table)`` and ``table.record(i)`` returning
the schema of train.data, with columns renamed to the canonical names.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from zeroft.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Columns:
    """Which source columns hold the canonical fields."""

    image: str = "image"
    caption: str = "caption"
    identity: str = "identity"
    mask: str = "mask"


class RecordTable:
    """Random access to records: ``record(i)`` → {"image": PIL, "caption": str, "identity"?: str, "mask"?: PIL}."""

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def column(self, name: str) -> list:
        """All values of a text column (identities), without decoding images."""
        raise NotImplementedError


def _as_image(value, root: Path | None) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        value = value.get("bytes") or value["path"]
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute() and root is not None:
            path = root / path
        return Image.open(path)
    raise TypeError(f"cannot read an image from {type(value).__name__}")


class HFTable(RecordTable):
    """A ``datasets.Dataset`` with renamed columns; image paths resolve against ``root``."""

    def __init__(self, dataset, columns: Columns, root: Path | None, name: str):
        self.dataset = dataset
        self.columns = columns
        self.root = root
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)

    def column(self, name: str) -> list:
        source = getattr(self.columns, name)
        return [str(v) for v in self.dataset[source]]

    def record(self, index: int) -> dict[str, Any]:
        row = self.dataset[int(index)]
        c = self.columns
        record = {"image": _as_image(row[c.image], self.root), "caption": str(row.get(c.caption) or "")}
        if c.identity in row and row[c.identity] is not None:
            record["identity"] = str(row[c.identity])
        if c.mask in row and row[c.mask] not in (None, ""):
            record["mask"] = _as_image(row[c.mask], self.root)
        return record


@dataclass
class _TarMember:
    shard: Path
    image: tarfile.TarInfo
    meta: dict
    mask: tarfile.TarInfo | None


class TarTable(RecordTable):
    """WebDataset shards read with random access: an index of members, not the bytes, in memory."""

    def __init__(self, folder: Path, columns: Columns):
        self.columns = columns
        self.members: list[_TarMember] = []
        for shard in sorted(folder.glob("*.tar")):
            groups: dict[str, dict[str, tarfile.TarInfo]] = {}
            with tarfile.open(shard) as tar:
                for info in tar.getmembers():
                    if not info.isfile():
                        continue
                    key, _, ext = info.name.partition(".")
                    groups.setdefault(key, {})[ext.lower()] = info
                for key in sorted(groups):
                    parts = groups[key]
                    image = next((parts[e] for e in ("png", "jpg", "jpeg", "webp") if e in parts), None)
                    if image is None:
                        continue
                    meta = {}
                    if "json" in parts:
                        meta = json.loads(tar.extractfile(parts["json"]).read())
                    elif "txt" in parts:
                        meta = {columns.caption: tar.extractfile(parts["txt"]).read().decode()}
                    self.members.append(_TarMember(shard, image, meta, parts.get("mask.png")))
        self._open: dict[Path, tarfile.TarFile] = {}

    def __len__(self) -> int:
        return len(self.members)

    def _read(self, shard: Path, info: tarfile.TarInfo) -> Image.Image:
        tar = self._open.get(shard)
        if tar is None:
            tar = self._open[shard] = tarfile.open(shard)
        return Image.open(io.BytesIO(tar.extractfile(info).read()))

    def column(self, name: str) -> list:
        source = getattr(self.columns, name)
        return [str(m.meta.get(source, "")) for m in self.members]

    def record(self, index: int) -> dict[str, Any]:
        member = self.members[int(index)]
        c = self.columns
        record = {"image": self._read(member.shard, member.image), "caption": str(member.meta.get(c.caption, ""))}
        if c.identity in member.meta:
            record["identity"] = str(member.meta[c.identity])
        if member.mask is not None:
            record["mask"] = self._read(member.shard, member.mask)
        return record

    def __getstate__(self):  # open tar handles do not cross into DataLoader workers
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


def open_source(source: str, columns: Columns, split: str = "train") -> RecordTable:
    """Open a data source (see the module docstring) as a :class:`RecordTable`."""
    path = Path(source)
    if path.is_dir() and list(path.glob("*.tar")):
        return TarTable(path, columns)
    import datasets

    if path.exists():
        root = path if path.is_dir() else path.parent
        files = [path] if path.is_file() else None
        for builder, patterns in (("parquet", ("*.parquet",)), ("json", ("*.jsonl", "*.json")), ("csv", ("*.csv",))):
            if files is None:
                found = sorted(p for pattern in patterns for p in path.glob(pattern) if p.name != "metadata.jsonl")
            else:
                found = [p for p in files if p.suffix in tuple(x[1:] for x in patterns)]
            if found:
                if all(p.stat().st_size == 0 for p in found):
                    raise InputError(f"the dataset {source} is empty ({', '.join(p.name for p in found)})")
                dataset = datasets.load_dataset(builder, data_files=[str(p) for p in found], split="train")
                return HFTable(dataset, columns, root, str(path))
        if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
            dataset = datasets.load_dataset("imagefolder", data_dir=str(path), split="train")
            return HFTable(dataset, columns, root, str(path))
        raise InputError(f"{source}: no .tar shards, parquet, jsonl, csv or images found")
    dataset = datasets.load_dataset(source, split=split)
    return HFTable(dataset, columns, None, source)
