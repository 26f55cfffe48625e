"""Training samples with the paper's regularizers (Jia et al., 2023, sec. 3.4), as a pure function of an index.

Record schema, the same for both streams (column names configurable, see train.sources):

    image:     the photo (datasets Image feature, bytes, or a path relative to the data folder)
    caption:   str; general-domain records describe everything in the image, domain-specific
               records describe the context (the paper's c = c_c + c_f from train.prepare)
    identity:  str, domain-specific only: which object the photo shows; every identity needs
               at least two photos for cross-reference regularization
    mask:      optional, domain-specific only: white marks the object (train.prepare writes it)

Each training sample is ``sample(g)`` for a global index g, decided by a random generator
seeded with (seed, g) alone. There is no data-loader state: a resumed run recomputes exactly
the samples an uninterrupted run would have seen, and rank r of W, taking g ≡ r (mod W), sees
data disjoint from every other rank's within an epoch (each stream is read through a seeded
permutation indexed by g). The regularizers, each a setting of :class:`Regularization`:

- mixing: the sample is domain-specific with probability r (paper default 0.3);
- cross-reference (eq. 3): a domain-specific sample takes its object embedding from ANOTHER
  photo of the same identity with probability ω;
- object-embedding dropping (eq. 4): general-domain samples use the null embedding ϕ;
- condition dropout for classifier-free guidance: text, object, or both dropped;
- background masking: the condition photo is x ⊗ m (mask column, else the automatic masker).

A dropped caption is :data:`DROPPED_CAPTION`; what a text encoder makes of it is decided once, in
train.losses.TextEncoderCache (SDXL's unconditional text is all zeros). Each sample also records
how its photo was resized and cropped (``original_size``, ``crop_top_left``), from which
:func:`time_ids` builds SDXL's size conditions.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from zeroft.errors import InputError
from zeroft.images import LoadedImage
from zeroft.masking import DEFAULT_MASKER, Masker, choose_mask

from .sources import Columns, RecordTable, open_source

DROPPED_CAPTION = ""  # the caption of a text-dropped sample: the empty prompt of classifier-free guidance


@dataclass(frozen=True)
class Regularization:
    """The paper's training regularizers; defaults follow the paper where it gives values.

    The one definition of these settings and their defaults: ``train.config.TrainConfig`` holds one,
    and the flags of ``python -m train.train`` take their defaults from it.
    """

    mix_ratio: float = 0.3  # r: probability that a sample is domain-specific (paper: 0.3)
    cross_reference: float = 0.5  # ω: probability of conditioning on another photo of the identity
    drop_general_object: bool = True  # eq. 4: general-domain samples use ϕ; False conditions them on themselves
    drop_text: float = 0.05  # caption → "" only (IP-Adapter's rate), for text guidance
    drop_object: float = 0.05  # object → ϕ only, for object guidance
    drop_both: float = 0.05  # both dropped, for the unconditional branch ε(∅, ϕ)
    mask_condition: bool = True  # encode x ⊗ m instead of the raw photo

    def __post_init__(self):
        for name in ("mix_ratio", "cross_reference", "drop_text", "drop_object", "drop_both"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise InputError(f"{name} is a probability: it must be between 0 and 1, not {value!r}.")
        if self.drop_text + self.drop_object + self.drop_both > 1.0:
            raise InputError("drop_text + drop_object + drop_both must not exceed 1: they are the probabilities "
                             "of three cases that exclude each other.")


def check_streams(has_domain: bool, has_general: bool, mix_ratio: float) -> None:
    """The datasets a mix ratio r draws from must be given: r > 0 needs domain-specific data, r < 1 general data."""
    if not has_domain and not has_general:
        raise InputError("Give domain_data and/or general_data (--domain_data, --general_data): "
                         "training needs at least one dataset.")
    if not has_domain and mix_ratio > 0:
        raise InputError(f"mix_ratio {mix_ratio:g} draws domain-specific samples, but no domain_data is given: "
                         "give --domain_data or set --mix_ratio 0.")
    if not has_general and mix_ratio < 1:
        raise InputError(f"mix_ratio {mix_ratio:g} draws general-domain samples, but no general_data is given: "
                         "give --general_data or set --mix_ratio 1.")


class DomainStream:
    """Domain-specific records grouped by identity, checked for cross-reference."""

    def __init__(self, table: RecordTable):
        if len(table) == 0:
            raise InputError("the domain-specific dataset is empty")
        identities = table.column("identity")
        if any(i in ("", "None") for i in identities):
            raise InputError("every domain-specific record needs an identity (column 'identity' is empty somewhere)")
        groups: dict[str, list[int]] = defaultdict(list)
        for index, identity in enumerate(identities):
            groups[identity].append(index)
        single = sorted(i for i, members in groups.items() if len(members) < 2)
        if single:
            raise InputError(
                f"{len(single)} identities have a single photo (e.g. {single[:3]}); cross-reference "
                "regularization needs at least two per identity: add photos or drop those identities"
            )
        self.table = table
        self.identities = identities
        self.groups = dict(groups)


def _check_columns(table: RecordTable, required: list[str], what: str) -> None:
    dataset = getattr(table, "dataset", None)
    if dataset is not None:
        names = set(dataset.column_names)
        missing = [getattr(table.columns, c) for c in required if getattr(table.columns, c) not in names]
    else:
        first = table.members[0].meta if len(table) else {}
        missing = [getattr(table.columns, c) for c in required if c != "image" and getattr(table.columns, c) not in first]
    if missing:
        raise InputError(f"the {what} dataset lacks column(s) {missing}; name them with the --*_column flags")


def open_streams(domain: str | None, general: str | None, domain_columns: Columns, general_columns: Columns,
                 split: str = "train") -> tuple[DomainStream | None, RecordTable | None]:
    """Open both streams and check them (columns present, not empty, identities with ≥ 2 photos)."""
    domain_stream = general_table = None
    if domain:
        table = open_source(domain, domain_columns, split)
        if len(table) == 0:
            raise InputError(f"the domain-specific dataset {domain} is empty")
        _check_columns(table, ["image", "caption", "identity"], "domain-specific")
        domain_stream = DomainStream(table)
    if general:
        general_table = open_source(general, general_columns, split)
        if len(general_table) == 0:
            raise InputError(f"the general-domain dataset {general} is empty")
        _check_columns(general_table, ["image", "caption"], "general-domain")
    return domain_stream, general_table


@functools.lru_cache(maxsize=8)
def _permutation(seed: int, stream: int, epoch: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(size)


def _permuted(seed: int, stream: int, position: int, size: int) -> int:
    """Record at ``position`` of an endless sequence of seeded permutations of range(size)."""
    epoch, offset = divmod(position, size)
    return int(_permutation(seed, stream, epoch, size)[offset])


def _to_tensor(image: Image.Image, resolution: int) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Resize the short side, centre-crop, scale to [-1, 1].

    Returns:
        (3, R, R) pixels; the photo's (height, width) as read; the crop's (top, left) corner in the
        resized photo (what diffusers' SDXL text-to-image example records as ``crop_top_left``).
    """
    image = image.convert("RGB")
    original_size = (image.height, image.width)
    scale = resolution / min(image.size)
    image = image.resize((max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))),
                         Image.Resampling.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1), original_size, (top, left)


class MixedTrainingData(torch.utils.data.Dataset):
    """``dataset[g]`` is the g-th training sample (see the module docstring).

    Each sample: ``pixel_values`` (3, R, R) in [-1, 1]; ``caption`` (:data:`DROPPED_CAPTION` after text
    dropout); ``condition`` (3, S, S) encoder input or zeros; ``use_object`` (bool: False means ϕ);
    ``original_size`` (height, width) of the photo as read and ``crop_top_left`` (top, left) of the
    R×R crop in the resized photo (SDXL's size conditions, :func:`time_ids`); and bookkeeping for
    tests and logs: ``stream``, ``record``, ``condition_record``.
    """

    def __init__(self, domain: DomainStream | None, general: RecordTable | None, encoder, resolution: int,
                 regularization: Regularization, seed: int, masker: str = DEFAULT_MASKER, length: int = 2**62):
        check_streams(domain is not None, general is not None, regularization.mix_ratio)
        reg = regularization
        self.domain, self.general, self.encoder = domain, general, encoder
        self.resolution, self.reg, self.seed = resolution, reg, seed
        self.masker = Masker(masker) if reg.mask_condition else None
        self.length = length

    def __len__(self) -> int:
        return self.length

    def _condition(self, record: dict[str, Any]) -> torch.Tensor:
        image = record["image"].convert("RGB")
        if not self.reg.mask_condition:
            mask = np.ones((image.height, image.width), np.float32)
        else:  # zeroft's one rule: the record's mask, else the automatic one (training photos carry no alpha)
            try:
                mask = choose_mask(LoadedImage(image, alpha=None), record.get("mask"), self.masker).mask
            except InputError:  # an empty mask (EmptyMaskError) or one drawn on another photo: one bad record
                # must not stop a long run, and an empty mask would hide the whole object: use the photo
                mask = np.ones((image.height, image.width), np.float32)
        return self.encoder.preprocess(image, mask)

    def __getitem__(self, g: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(g)])
        reg = self.reg
        is_domain = rng.random() < reg.mix_ratio
        u = rng.random()  # one draw decides the condition dropout, so the three cases exclude each other
        if u < reg.drop_text:
            drop_text, drop_object = True, False
        elif u < reg.drop_text + reg.drop_object:
            drop_text, drop_object = False, True
        elif u < reg.drop_text + reg.drop_object + reg.drop_both:
            drop_text, drop_object = True, True
        else:
            drop_text, drop_object = False, False
        if is_domain:
            index = _permuted(self.seed, 0, int(g), len(self.domain.table))
            record = self.domain.table.record(index)
            condition_index = index
            if rng.random() < reg.cross_reference:  # eq. 3: another photo of the same identity
                others = [i for i in self.domain.groups[self.domain.identities[index]] if i != index]
                condition_index = int(others[rng.integers(len(others))])
            use_object = not drop_object
            condition_record = record if condition_index == index else self.domain.table.record(condition_index)
        else:
            index = _permuted(self.seed, 1, int(g), len(self.general))
            record = self.general.record(index)
            condition_index, condition_record = index, record
            use_object = not reg.drop_general_object and not drop_object  # eq. 4: ϕ for general images
        size = self.encoder.image_size
        pixel_values, original_size, crop_top_left = _to_tensor(record["image"], self.resolution)
        return {
            "pixel_values": pixel_values,
            "original_size": original_size,
            "crop_top_left": crop_top_left,
            "caption": DROPPED_CAPTION if drop_text else record["caption"],
            "condition": self._condition(condition_record) if use_object else torch.zeros(3, size, size),
            "use_object": use_object,
            "stream": "domain" if is_domain else "general",
            "record": index,
            "condition_record": condition_index,
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of samples; a sample without size records (another data source) counts as uncropped at its pixel size."""
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "original_size": torch.tensor([s.get("original_size", tuple(s["pixel_values"].shape[-2:])) for s in samples]),
        "crop_top_left": torch.tensor([s.get("crop_top_left", (0, 0)) for s in samples]),  # (B, 2) each
        "condition": torch.stack([s["condition"] for s in samples]),
        "use_object": torch.tensor([s["use_object"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "stream": [s["stream"] for s in samples],
        "record": [s["record"] for s in samples],
        "condition_record": [s["condition_record"] for s in samples],
    }


def time_ids(batch: dict[str, Any]) -> torch.Tensor:
    """SDXL's size conditions of a batch, (B, 6): original size, crop top-left, target size
    (Podell et al., 2023, sec. 2.2), laid out as diffusers' SDXL text-to-image example lays them out."""
    original = batch["original_size"]  # (B, 2): height, width
    target = torch.tensor(batch["pixel_values"].shape[-2:]).expand_as(original)  # (B, 2)
    return torch.cat([original, batch["crop_top_left"], target], dim=1).float()


def global_indices(step: int, micro: int, accumulation: int, rank: int, world: int, batch: int) -> list[int]:
    """The sample indices g of one micro-batch: disjoint across ranks, steps and micro-batches."""
    first = ((step * accumulation + micro) * world + rank) * batch
    return list(range(first, first + batch))
