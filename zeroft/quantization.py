"""Device and dtype choice, and weight quantization of the UNet and text encoder.

Quantization goes through the libraries' own configs, applied while loading:

- ``"int8"``: torchao int8 weight-only (diffusers/transformers ``TorchAoConfig``); works on a
  CPU and on CUDA. Linear weights shrink about 4x.
- ``"bnb-8bit"`` / ``"bnb-4bit"``: bitsandbytes LLM.int8 / NF4 (``BitsAndBytesConfig``);
  bitsandbytes quantizes on a CUDA GPU only, so these fail early with a clear message elsewhere.
"""

from __future__ import annotations

import torch

from .errors import InputError

QUANTIZATION_MODES = ("none", "int8", "bnb-8bit", "bnb-4bit")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, if this machine has it.

    Raises:
        InputError: an unknown device name, or a CUDA / MPS device this machine does not have
            (found here, not when the first weights move to it).
    """
    supported = "use cpu, cuda, cuda:<index> or mps"
    try:
        checked = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"Unknown device {str(device)!r}; {supported}.") from None
    if checked.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"Device {str(device)!r} needs an NVIDIA GPU with CUDA, and this machine has none; "
                             "use cpu.")
        count = torch.cuda.device_count()
        if checked.index is not None and checked.index >= count:
            raise InputError(f"Device {str(device)!r} does not exist: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}.")
    elif checked.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise InputError(f"Device {str(device)!r} needs Apple's Metal (MPS), which this machine lacks; use cpu.")
    elif checked.type != "cpu":
        raise InputError(f"Device {str(device)!r} is not supported; {supported}.")
    return checked


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device (checked by :func:`check_device`), else CUDA when present, else Apple MPS, else CPU."""
    if device is not None:
        return check_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """The given dtype, else fp16 on CUDA/MPS (bf16 where the GPU supports it well) and fp32 on CPU.

    fp16 is the default on CUDA because Stable Diffusion 1.x VAEs were released in fp16 and
    behave; bf16 is used on Ampere-or-newer GPUs where it costs nothing and avoids overflow.
    """
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                 "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in names:
            raise InputError(f"Unknown dtype {dtype!r}; use one of {sorted(names)}.")
        return names[dtype]
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def check_quantization(mode: str, device: torch.device) -> None:
    """Raise :class:`InputError` for an unknown mode, or a bitsandbytes mode without CUDA."""
    if mode not in QUANTIZATION_MODES:
        raise InputError(f"Unknown quantization {mode!r}; use one of {', '.join(QUANTIZATION_MODES)}.")
    if mode.startswith("bnb") and (device.type != "cuda" or not torch.cuda.is_available()):
        raise InputError(
            f"Quantization {mode!r} uses bitsandbytes, which needs an NVIDIA GPU with CUDA; "
            "this machine has none. Use 'int8' (torchao), which works on a CPU, or 'none'."
        )


def quantization_configs(mode: str, compute_dtype: torch.dtype):
    """(diffusers config for the UNet, transformers config for the text encoder), or (None, None)."""
    if mode == "none":
        return None, None
    if mode == "int8":
        from diffusers import TorchAoConfig as DiffusersTorchAo
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig as TransformersTorchAo

        return DiffusersTorchAo(Int8WeightOnlyConfig()), TransformersTorchAo(Int8WeightOnlyConfig())
    from diffusers import BitsAndBytesConfig as DiffusersBnb
    from transformers import BitsAndBytesConfig as TransformersBnb

    if mode == "bnb-8bit":
        return DiffusersBnb(load_in_8bit=True), TransformersBnb(load_in_8bit=True)
    options = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    return DiffusersBnb(**options), TransformersBnb(**options)


def quantize_object_attention_(unet, mode: str) -> None:
    """Quantize the object-attention layers installed after loading (int8 only).

    The load-time configs quantize the base weights; the adapter is added afterwards, so for
    int8 its projection and key/value layers are quantized here with the same torchao config.
    bitsandbytes layers can only be created at load time, so with bnb modes they stay in the
    compute dtype (about 2.5% of an SD1.5 UNet's weights).
    """
    if mode != "int8":
        return
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from .adapter import IP_PROCESSORS

    quantize_(unet.encoder_hid_proj, Int8WeightOnlyConfig())
    for processor in unet.attn_processors.values():
        if isinstance(processor, IP_PROCESSORS):
            quantize_(processor, Int8WeightOnlyConfig())


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Storage bytes of a tensor, looking inside quantized tensor subclasses (torchao)."""
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def linear_weight_bytes(module: torch.nn.Module) -> int:
    """Bytes held by the weights of every Linear layer in ``module`` (what quantization shrinks).

    ``get_memory_footprint`` does not see inside torchao's tensor subclasses, hence this count.
    """
    return sum(tensor_bytes(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear))
