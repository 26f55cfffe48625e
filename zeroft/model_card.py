"""The model card (README.md) written into every checkpoint folder."""

from __future__ import annotations

from pathlib import Path

from .config import ZeroFTConfig


def _front_matter(config: ZeroFTConfig) -> str:
    lines = ["---", "library_name: zeroft", "pipeline_tag: text-to-image",
             "tags:", "  - zeroft", "  - ip-adapter", "  - stable-diffusion", "  - image-customization"]
    if "/" in config.base_model:
        lines.append(f"base_model: {config.base_model}")
    license_id = config.licenses.get("spdx")
    lines.append(f"license: {license_id}" if license_id else "license: other")
    lines.append("---")
    return "\n".join(lines)


def _table(rows: dict) -> str:
    if not rows:
        return "_not recorded_\n"
    out = ["| setting | value |", "| --- | --- |"]
    out += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(out) + "\n"


def _validation_grid(config: ZeroFTConfig) -> list[str]:
    """The section showing training's last validation grid (train.validation's layout); none without one."""
    grid = config.training.get("validation_grid")
    if not grid:
        return []
    return ["## Validation grid\n", "Row i: reference photo i, then one image per validation prompt.\n",
            f"![validation grid]({grid})\n"]


def render_model_card(config: ZeroFTConfig, name: str = "this checkpoint") -> str:
    encoder = config.encoder
    encoder_source = encoder.path and f"local folder `{encoder.path}/`" or f"open_clip `{encoder.model_name}` / `{encoder.pretrained}`"
    parts = [
        _front_matter(config),
        f"# zeroft checkpoint: {name}\n",
        "Generates new images of the object in ONE reference photo, in the scene a text prompt describes, "
        "in a single forward pass with no per-object fine-tuning (Jia et al., 2023, *Taming Encoder for Zero "
        "Fine-tuning Image Customization with Text-to-Image Diffusion Models*), built with "
        "zeroft.\n",
        "## Parts\n",
        _table({
            "base text-to-image model": f"`{config.base_model}`",
            "whole UNet tuned": "yes (`unet/`)" if config.unet_tuned else "no (adapter only)",
            "object encoder (frozen)": encoder_source,
            "background fill / crop to object": f"{encoder.background_fill} / {encoder.crop_to_object}",
            "object tokens": config.num_tokens,
            "automatic mask": f"`{config.masker}`",
            "adapter layout": ("IP-Adapter Plus (patch tokens through a resampler: `image_proj.latents`, "
                               "`image_proj.layers.*`, `ip_adapter.N.to_k_ip/to_v_ip`)" if config.projection == "plus"
                               else "IP-Adapter (`image_proj.*`, `ip_adapter.N.to_k_ip/to_v_ip`)"),
        }),
        "## Training\n",
        _table(config.training),
        *_validation_grid(config),
        "## Default generation settings\n",
        _table({k: v for k, v in vars(config.defaults).items()}),
        "## Licences\n",
        _table(config.licenses),
        "## Use\n",
        "```python\nfrom zeroft import ZeroFTPipeline\n\npipe = ZeroFTPipeline.from_pretrained(\"PATH_OR_REPO\")\n"
        "out = pipe(\"a photo of it on a beach\", object_image=\"photo.png\", num_images=4, seed=0)\n"
        "out.images[0].save(\"out.png\")\n```\n",
        "```bash\npython -m zeroft generate --checkpoint PATH_OR_REPO --image photo.png "
        "--prompt \"a photo of it on a beach\" --out outputs/\n```\n",
        ("The adapter also loads in plain diffusers (IP-Adapter Plus layout): " if config.projection == "plus" else
         "With 4 object tokens the adapter also loads in plain diffusers: ")
        + "`pipe.load_ip_adapter(PATH, subfolder=\"\", weight_name=\"adapter.safetensors\", image_encoder_folder=None)`, "
        "given image embeddings from the encoder above.\n",
    ]
    return "\n".join(parts)


def write_model_card(folder: str | Path, config: ZeroFTConfig) -> None:
    folder = Path(folder)
    (folder / "README.md").write_text(render_model_card(config, folder.name))
