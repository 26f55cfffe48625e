"""zeroft: one photo of an object + a text prompt → new images of that object, no fine-tuning.

Re-exports the public API; each name lives in the module that owns it.
"""

from . import quiet  # noqa: F401  first: other libraries' import-time noise is filtered before they load
from .adapter import adapter_state_dict, install_object_attention, load_object_attention, set_object_scale
from .checkpoint import push_to_hub, save_checkpoint
from .config import EncoderConfig, GenerationDefaults, ZeroFTConfig
from .encoder import ObjectEncoder
from .errors import HubUnavailableError, InputError, ModelUnavailableError
from .generation import EncodedObject
from .images import load_image, load_mask
from .loading import get_pipeline, load_pipeline, pipeline_cache
from .masking import ChosenMask, Masker, apply_mask, choose_mask, prepare_mask
from .pipeline import GenerationSettings, ZeroFTOutput, ZeroFTPipeline
from .pipeline_flux import ZeroFTFluxPipeline
from .pipeline_xl import ZeroFTXLPipeline

__version__ = "0.1.0"

__all__ = [
    "ChosenMask", "EncodedObject", "EncoderConfig", "GenerationDefaults", "GenerationSettings",
    "HubUnavailableError", "InputError", "Masker", "ModelUnavailableError", "ObjectEncoder",
    "ZeroFTConfig", "ZeroFTFluxPipeline", "ZeroFTOutput", "ZeroFTPipeline", "ZeroFTXLPipeline", "adapter_state_dict", "apply_mask", "choose_mask", "get_pipeline", "install_object_attention",
    "load_image", "load_mask", "load_object_attention", "load_pipeline", "pipeline_cache", "prepare_mask", "push_to_hub",
    "save_checkpoint", "set_object_scale",
]
