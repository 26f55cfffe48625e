"""Tiny training datasets written to a folder, in the layouts train.train reads (tests, benchmarks)."""

import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "yellow": (230, 220, 20)}
BACKGROUNDS = {"blue": (30, 30, 220), "gray": (128, 128, 128)}


def _square(colour, background, x, y, size=64, side=28):
    image = Image.new("RGB", (size, size), background)
    image.paste(colour, (x, y, x + side, y + side))
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (x, y, x + side, y + side))
    return image, mask


def write_domain_imagefolder(root: Path, photos_per_identity: int = 3, with_masks: bool = True) -> Path:
    """An imagefolder with metadata.jsonl: file_name, caption (context only), identity, mask."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for name, colour in COLOURS.items():
        for k in range(photos_per_identity):
            background_name, background = list(BACKGROUNDS.items())[k % 2]
            image, mask = _square(colour, background, int(rng.integers(0, 30)), int(rng.integers(0, 30)))
            image.save(root / f"{name}_{k}.png")
            row = {"file_name": f"{name}_{k}.png", "caption": f"an object on a {background_name} background",
                   "identity": name}
            if with_masks:
                mask.save(root / f"mask_{name}_{k}.png")
                row["mask"] = f"mask_{name}_{k}.png"
            rows.append(row)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_general_jsonl(root: Path, count: int = 8) -> Path:
    """JSON lines with image paths relative to the folder: image, caption (describes everything)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        name, colour = list(COLOURS.items())[i % 3]
        background_name, background = list(BACKGROUNDS.items())[i % 2]
        image, _ = _square(colour, background, 8 + 2 * i, 18)
        image.save(root / f"g{i}.png")
        rows.append({"image": f"g{i}.png", "caption": f"a {name} square on a {background_name} background"})
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_domain_shards(root: Path, per_shard: int = 4) -> Path:
    """The domain images as WebDataset shards: KEY.png, KEY.json, KEY.mask.png."""
    source = write_domain_imagefolder(root / "src")
    rows = [json.loads(line) for line in (source / "metadata.jsonl").read_text().splitlines()]
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(rows), per_shard):
        with tarfile.open(shards / f"shard-{start // per_shard:05d}.tar", "w") as tar:
            for i, row in enumerate(rows[start:start + per_shard], start):
                key = f"sample{i:05d}"
                tar.add(source / row["file_name"], arcname=f"{key}.png")
                tar.add(source / row["mask"], arcname=f"{key}.mask.png")
                meta = root / f"{key}.json"
                meta.write_text(json.dumps({"caption": row["caption"], "identity": row["identity"]}))
                tar.add(meta, arcname=f"{key}.json")
    return shards


def write_tiny_captioner(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised BLIP captioner at toy size, saved like a Hub model (real code path, no download)."""
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "dog", "cat", "sitting", "on", "the",
             "grass", "red", "green", "yellow", "square", "with", "blue", "background"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=40, pad_token_id=0, sep_token_id=3,
                         bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]")),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tiny_zero_shot_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny open_clip model in the local-folder layout, with open_clip's own BPE vocabulary size."""
    import torch
    from open_clip.model import CLIP

    from zeroft.encoder import save_open_clip_folder

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(seed)
    save_open_clip_folder(CLIP(**config).eval(), config, folder, (0.48145466, 0.4578275, 0.40821073),
                          (0.26862954, 0.26130258, 0.27577711))
    return folder


def write_tiny_dino(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised ViT (DINO's architecture at toy size) and its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
                       patch_size=8), add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


DREAMBENCH_PROMPTS = """Classes

subject_name,class
backpack,backpack
dog,dog
teapot,teapot

Prompts

Object Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a {0} {1} in the snow'.format(unique_token, class_token),
'a red {0} {1}'.format(unique_token, class_token)
]

Live Subject Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a {0} {1} wearing a red hat'.format(unique_token, class_token),
'a {0} {1} in a chef outfit'.format(unique_token, class_token)
]
"""


def write_tiny_dreambench(folder: Path) -> Path:
    """DreamBench's layout (subject folders + prompts_and_classes.txt) with 3 fabricated subjects."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts_and_classes.txt").write_text(DREAMBENCH_PROMPTS)
    for index, (subject, colour) in enumerate([("backpack", (200, 40, 40)), ("dog", (150, 100, 40)), ("teapot", (40, 40, 200))]):
        (folder / subject).mkdir(exist_ok=True)
        for k in range(3):
            image = Image.new("RGB", (96, 96), (235, 235, 235))
            image.paste(colour, (20 + 6 * k, 24, 70 + 6 * k, 80))
            image.save(folder / subject / f"{k:02d}.jpg")
    return folder
