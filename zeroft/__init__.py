"""zeroft: one photo of an object + a text prompt → new images of that object, no fine-tuning.

Re-exports the public API; each name lives in the module that owns it.
"""

from . import quiet  # noqa: F401  first: other libraries' import-time noise is filtered before they load

# The public names and the modules that own them, imported on first use (PEP 562): ``import zeroft`` costs almost
# nothing, so ``python -m zeroft generate --help`` and the CLI's input checks answer before torch, diffusers and
# transformers load (8 s on 2 cores); ``from zeroft import load_pipeline`` works as it always did.
_EXPORTS = {
    "adapter": ("adapter_state_dict", "install_object_attention", "load_object_attention", "set_object_scale"),
    "checkpoint": ("push_to_hub", "save_checkpoint"),
    "config": ("EncoderConfig", "GenerationDefaults", "ZeroFTConfig"),
    "encoder": ("ObjectEncoder",),
    "errors": ("HubUnavailableError", "InputError", "ModelUnavailableError"),
    "generation": ("EncodedObject",),
    "images": ("load_image", "load_mask"),
    "loading": ("get_pipeline", "load_pipeline", "pipeline_cache"),
    "masking": ("ChosenMask", "Masker", "apply_mask", "choose_mask", "prepare_mask"),
    "pipeline": ("GenerationSettings", "ZeroFTOutput", "ZeroFTPipeline"),
    "pipeline_flux": ("ZeroFTFluxPipeline",),
    "pipeline_xl": ("ZeroFTXLPipeline",),
}
_OWNER = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _OWNER:
        raise AttributeError(f"module 'zeroft' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_OWNER[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNER))


__version__ = "0.1.0"

__all__ = sorted(_OWNER)
