"""Loading a model from safetensors one tensor at a time, quantizing each Linear as soon as it is filled.

``from_pretrained`` with a torchao config reads a whole weight file (safetensors maps it into the
process, and mapped pages count as resident memory) and holds full-precision weights before it
quantizes them: at SD1.5 size int8 peaked *above* no quantization (10.6 GB against 8.5 GB). This
module owns the other way round:

1. build the model with empty (meta) parameters: accelerate ``init_empty_weights``, buffers real;
2. read each tensor with ``seek`` + ``readinto`` into a fresh buffer, never mapping the file, so
   resident memory is the model so far plus one tensor (safetensors' layout is public: 8-byte
   little-endian header length, a JSON header of ``name -> dtype, shape, data_offsets``, raw bytes);
3. cast it to the compute dtype, move it to the device, put it into its module, and for int8 run
   torchao ``quantize_(linear, Int8WeightOnlyConfig())`` on an ``nn.Linear`` as soon as its weight is
   in, which frees the full-precision copy before the next tensor is read.

With ``quantization="none"`` the result is tensor for tensor what ``from_pretrained`` gives; with
``"int8"`` it is what ``quantize_(model, Int8WeightOnlyConfig())`` gives after that load.
bitsandbytes modes are not handled here: they quantize on a CUDA GPU inside diffusers' loader.
The object encoder's open_clip image tower is filled the same way by zeroft.streaming_visual.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from .backbones import WEIGHT_STEMS
from .errors import ModelUnavailableError
from .fence import transformers_key_names

STREAMING_QUANTIZATION = ("none", "int8")
# Standard weight file stems: diffusers' models, then transformers' models.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie: file, dtype, shape and absolute byte range."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    def meta(self) -> torch.Tensor:
        """A meta tensor of this shape and dtype: lets key conversions run without reading bytes."""
        return torch.empty(self.shape, dtype=self.dtype, device="meta")


def read_header(path: str | Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file, in file order, without reading their bytes."""
    path = Path(path)
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    base = 8 + length  # data_offsets count from the end of the header
    entries = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES[spec["dtype"]]
        shape = tuple(spec["shape"])
        begin, end = spec["data_offsets"]
        numel = 1
        for size in shape:
            numel *= size
        if end - begin != numel * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes, its shape {shape} needs {numel * dtype.itemsize}")
        entries[name] = TensorEntry(path, dtype, shape, base + begin, base + end)
    return dict(sorted(entries.items(), key=lambda item: item[1].start))


def weight_entries(folder: str | Path, variant: str | None = None) -> dict[str, TensorEntry]:
    """Every tensor of a model folder's safetensors weights: one file, or shards listed in an index.

    Looks for diffusers' and transformers' standard names (``diffusion_pytorch_model`` / ``model``,
    ``.safetensors`` or ``.safetensors.index.json``; with ``variant``, e.g. ``fp16``, the variant's names).

    Raises:
        ModelUnavailableError: the folder holds none of those files, or a shard the index names.
    """
    folder = Path(folder)
    for stem in WEIGHT_STEMS:
        single = folder / (f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors")
        if single.is_file():
            return read_header(single)
        index = folder / (f"{stem}.safetensors.index.{variant}.json" if variant else f"{stem}.safetensors.index.json")
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            entries = {}
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise ModelUnavailableError(f"{index} names the shard {shard}, which {folder} does not have.")
                entries.update(read_header(folder / shard))
            absent = sorted(set(weight_map) - set(entries))
            if absent:
                raise ModelUnavailableError(f"{index} lists {len(absent)} tensor(s) its shards lack, e.g. {absent[0]!r}.")
            return {name: entries[name] for name in sorted(weight_map, key=lambda n: (entries[n].file, entries[n].start))}
    names = ", ".join(f"{stem}{'.' + variant if variant else ''}.safetensors[.index.json]" for stem in WEIGHT_STEMS)
    raise ModelUnavailableError(f"{folder} has no safetensors weights ({names}); only safetensors are streamed.")


class TensorReader(contextlib.AbstractContextManager):
    """Reads tensors by :class:`TensorEntry` with plain ``readinto`` (no mmap), one open file per shard."""

    def __init__(self):
        self._handles: dict[Path, object] = {}

    def read(self, entry: TensorEntry) -> torch.Tensor:
        handle = self._handles.get(entry.file)
        if handle is None:
            handle = self._handles[entry.file] = open(entry.file, "rb", buffering=0)
        data = torch.empty(entry.end - entry.start, dtype=torch.uint8)
        view = memoryview(data.numpy())
        handle.seek(entry.start)
        done = 0
        while done < len(view):  # a single read(2) returns at most ~2 GiB on Linux
            count = handle.readinto(view[done:])
            if not count:
                raise ValueError(f"{entry.file} ends inside a tensor (truncated file?)")
            done += count
        return data.view(entry.dtype).reshape(entry.shape)  # bytes are little-endian, as on x86 and ARM

    def __exit__(self, *exc_info):
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def _slots(model: nn.Module) -> dict[str, list[tuple[nn.Module, str]]]:
    """state_dict key -> every (module, attribute) holding that tensor; tied weights share one entry."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    keys: dict[str, int] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        local = {name for name in module.state_dict(keep_vars=True) if "." not in name}  # persistent ones only
        for name in [n for n, _ in module.named_parameters(recurse=False)] + [
                n for n, _ in module.named_buffers(recurse=False) if n in local]:
            tensor = getattr(module, name)
            if tensor is None:
                continue
            owners.setdefault(id(tensor), []).append((module, name))
            keys.setdefault(f"{prefix}.{name}" if prefix else name, id(tensor))
    slots = {}
    for key, ident in keys.items():
        unique = []
        for slot in owners[ident]:
            if all(slot[0] is not other[0] or slot[1] != other[1] for other in unique):
                unique.append(slot)
        slots[key] = unique
    return slots


def check_keys(model: nn.Module, shapes: dict[str, tuple[int, ...]], source: str, ignore: Iterable[str] = ()) -> None:
    """Raise ValueError, before any byte is read, when the file's tensors do not fit the model.

    A tensor the model lacks, a parameter the file lacks (a buffer it lacks keeps the model's own
    value, as in ``from_pretrained``), or a shape that differs. ``ignore``: file keys to skip.
    """
    slots = _slots(model)
    ignore = set(ignore)
    unexpected = sorted(k for k in shapes if k not in slots and k not in ignore)
    loaded = {(id(module), name) for k in shapes if k in slots for module, name in slots[k]}  # tied keys share slots
    missing = sorted(k for k, v in slots.items() if not any((id(m), n) in loaded for m, n in v)
                     and isinstance(getattr(*v[0]), nn.Parameter))
    wrong = [f"{k}: file {tuple(s)}, model {tuple(getattr(*slots[k][0]).shape)}" for k, s in shapes.items()
             if k in slots and tuple(s) != tuple(getattr(*slots[k][0]).shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) the model needs are not in the file, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) in the file are not in the model, e.g. {unexpected[:3]}")
    if wrong:
        problems.append(f"{len(wrong)} shape(s) differ, e.g. {wrong[:3]}")
    if problems:
        raise ValueError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems) + ".")


TRIM_EVERY_BYTES = 256 * 1024 ** 2  # bounds the freed-but-resident memory at about this much


def release_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Each full-precision tensor freed after quantization (or after a cast) leaves a hole in the
    heap: glibc raises its mmap threshold as large blocks come and go (up to 32 MiB), so weight-sized
    blocks end up on the heap, whose free pages stay resident. Measured on the ViT-H/14 tower: 3.6 GB
    resident after an int8 load without trimming, 1.5 GB with it (the weights are 0.7 GB).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


# Modules that hand their Linears' weights to a functional op instead of calling the Linears: int8 weights
# (torchao's Int8Tensor) cannot go there (no aten.t), so their Linears stay in full precision. open_clip's
# ModifiedResNet attention pool (open_clip 3.3.0, modified_resnet.AttentionPool2d) passes q/k/v/c_proj's weights to
# F.multi_head_attention_forward; the embedded toy model's encoder has one.
FUNCTIONAL_WEIGHT_USERS = ("AttentionPool2d",)


def int8_skipped(model: nn.Module) -> set[int]:
    """ids of the Linears in ``model`` that int8 must leave alone (their weights are used outside ``Linear.forward``)."""
    return {id(child) for module in model.modules() if type(module).__name__ in FUNCTIONAL_WEIGHT_USERS
            for child in module.modules() if isinstance(child, nn.Linear)}


def fill_(model: nn.Module, tensors: Iterator[tuple[str, torch.Tensor]], *, dtype: torch.dtype | None,
          quantization: str = "none", device: str | torch.device = "cpu", keep_in_fp32: Iterable[str] = ()) -> nn.Module:
    """Put each (key, tensor) into ``model`` as it comes, quantizing a Linear once its weight is in.

    Args:
        model: built with empty parameters (keys already checked by :func:`check_keys`).
        tensors: (state_dict key, tensor) pairs, read lazily: only one needs to exist at a time.
        dtype: compute dtype of floating tensors; None keeps each file's dtype.
        quantization: "none" or "int8" (torchao int8 weight-only, each ``nn.Linear`` torchao accepts but those
            :func:`int8_skipped` names).
        device: where the tensors go (quantization runs there).
        keep_in_fp32: module names whose floating tensors stay fp32 in an fp16 load (``_keep_in_fp32_modules``).
    """
    if quantization not in STREAMING_QUANTIZATION:
        raise ValueError(f"streamed loading quantizes {STREAMING_QUANTIZATION}, not {quantization!r}")
    config = None
    if quantization == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        config = Int8WeightOnlyConfig()
    keep_in_fp32 = tuple(keep_in_fp32)
    skipped = int8_skipped(model) if config is not None else set()
    slots = _slots(model)
    since_trim = 0
    for key, tensor in tensors:
        since_trim += tensor.numel() * tensor.element_size()
        if since_trim > TRIM_EVERY_BYTES:
            release_freed_memory()
            since_trim = 0
        if tensor.is_floating_point() and dtype is not None:
            # as diffusers and transformers do: the modules a model names stay fp32 when loading in fp16
            fp32 = dtype == torch.float16 and any(part in keep_in_fp32 for part in key.split("."))
            tensor = tensor.to(torch.float32 if fp32 else dtype)
        tensor = tensor.to(device)
        for module, name in slots[key]:
            old = getattr(module, name)
            # nn.Module.__setattr__ replaces a registered parameter or buffer in place, keeping a buffer's persistence
            setattr(module, name, nn.Parameter(tensor, requires_grad=old.requires_grad)
                    if isinstance(old, nn.Parameter) else tensor)
        del tensor  # the module holds the only reference, so quantize_ below frees the full-precision copy
        module, name = slots[key][0]
        if config is not None and name == "weight" and isinstance(module, nn.Linear) and id(module) not in skipped:
            quantize_(module, config)  # skips what torchao skips (e.g. MultiheadAttention's out_proj)
    for module in model.modules():  # buffers the file lacks (non-persistent ones) follow the model
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.device != torch.device(device):
                setattr(module, name, buffer.to(device))
    release_freed_memory()
    left = [k for k, v in slots.items() if getattr(*v[0]).is_meta]
    if left:
        raise ValueError(f"{len(left)} weight(s) were never filled, e.g. {left[:3]}")
    return model.eval()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None):
    """transformers builds its models under the load dtype (so float buffers get it); diffusers does not."""
    previous = torch.get_default_dtype()
    if dtype is not None and dtype.is_floating_point:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def load_streaming(model_class: type, folder: str | Path, *, dtype: torch.dtype | None, quantization: str = "none",
                   device: str | torch.device = "cpu", subfolder: str | None = None, variant: str | None = None):
    """A diffusers ``ModelMixin`` or transformers ``PreTrainedModel`` loaded tensor by tensor.

    Equal to ``model_class.from_pretrained(folder, subfolder=subfolder, dtype=dtype)`` for
    ``quantization="none"`` (every state_dict tensor, outputs, eval mode), and to that followed
    by ``quantize_(model, Int8WeightOnlyConfig())`` for ``"int8"``; but the peak resident memory
    is the finished model plus one tensor, where ``from_pretrained`` holds the whole file too.

    Args:
        model_class: e.g. ``UNet2DConditionModel``, ``CLIPTextModel``, ``CLIPTextModelWithProjection``.
        folder: local model folder (or a pipeline folder with ``subfolder``) holding config.json and
            safetensors weights, one file or shards with an index.
        dtype: compute dtype of floating weights (int8 keeps it for scales and activations).
        quantization: "none" or "int8" (torchao int8 weight-only, each Linear as soon as it is read).
        device: where the weights go; quantization runs there.
        subfolder: the model's folder inside ``folder`` (``"unet"``, ``"text_encoder_2"``, ...).
        variant: weight file variant (``"fp16"`` reads ``diffusion_pytorch_model.fp16.safetensors``).

    Raises:
        ModelUnavailableError: no config.json or no safetensors weights in the folder.
        ValueError: the file's tensors do not fit the config (missing, extra or misshapen tensors),
            found from the headers before any weight is read.

    Example:
        >>> import tempfile
        >>> from diffusers import UNet2DConditionModel
        >>> from zeroft.tiny import tiny_unet
        >>> folder = tempfile.mkdtemp()
        >>> tiny_unet().save_pretrained(folder)
        >>> unet = load_streaming(UNet2DConditionModel, folder, dtype=torch.float32, quantization="int8")
        >>> type(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight).__name__
        'Int8Tensor'
    """
    from accelerate import init_empty_weights
    from diffusers import ModelMixin

    folder = Path(folder) / subfolder if subfolder else Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelUnavailableError(f"{folder} has no config.json, so {model_class.__name__} cannot be built from it.")
    entries = weight_entries(folder, variant)
    diffusers_model = issubclass(model_class, ModelMixin)
    if diffusers_model:
        config = model_class.load_config(folder)
        with init_empty_weights(include_buffers=False):
            model = model_class.from_config(config)
        ignore = ()
    else:
        config = model_class.config_class.from_pretrained(folder)
        if dtype is not None:
            config.dtype = dtype
        with init_empty_weights(include_buffers=False), _default_dtype(dtype):
            model = model_class(config)
        if hasattr(model, "tie_weights"):  # built empty, tied weights are not yet one tensor (T5's embed_tokens and
            model.tie_weights()  # shared, whose file holds only shared.weight): tie them before matching the file
        names = transformers_key_names(model, entries)
        entries = {names[key]: entry for key, entry in entries.items()}
        # Checkpoints written by older transformers carry e.g. text_model.embeddings.position_ids, which
        # is a non-persistent buffer now; from_pretrained skips such keys, and so does this.
        patterns = getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []
        non_persistent = {name for name, _ in model.named_buffers()} - set(model.state_dict(keep_vars=True))
        ignore = [k for k in entries if k in non_persistent or any(re.search(p, k) for p in patterns)]
    check_keys(model, {k: e.shape for k, e in entries.items()}, str(folder), ignore)
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    with TensorReader() as reader:
        skipped = set(ignore)
        tensors = ((key, reader.read(entry)) for key, entry in entries.items() if key not in skipped)
        fill_(model, tensors, dtype=dtype, quantization=quantization, device=device, keep_in_fp32=keep)
    if diffusers_model:
        model.register_to_config(_name_or_path=str(folder))
    else:
        model.name_or_path = str(folder)
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    return model


def load_parts_streaming(folder: str | Path, parts: Iterable[str], *, dtype: torch.dtype | None,
                         quantization: str = "none", device: str | torch.device = "cpu") -> dict[str, nn.Module]:
    """Some models of a diffusers pipeline folder, each by :func:`load_streaming`, classes from model_index.json.

    The result goes to the pipeline's ``from_pretrained`` as keyword arguments, which then loads
    the other parts itself: ``Pipeline.from_pretrained(folder, **load_parts_streaming(folder, ["unet"], ...))``.

    Args:
        folder: local pipeline folder (a Hub snapshot folder too).
        parts: e.g. ``("unet", "text_encoder", "text_encoder_2")``.
        dtype, quantization, device: as for :func:`load_streaming`.
    """
    import importlib

    index_file = Path(folder) / "model_index.json"
    if not index_file.is_file():
        raise ModelUnavailableError(f"{folder} has no model_index.json, so its parts' classes are unknown.")
    index = json.loads(index_file.read_text())
    models = {}
    for part in parts:
        spec = index.get(part)
        if not isinstance(spec, list) or spec[0] is None:
            raise ModelUnavailableError(f"{index_file} lists no model {part!r}.")
        model_class = getattr(importlib.import_module(spec[0]), spec[1])
        models[part] = load_streaming(model_class, folder, subfolder=part, dtype=dtype, quantization=quantization,
                                      device=device)
    return models
