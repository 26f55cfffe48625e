"""Captions for training records: the paper's c = c_c + c_f (Jia et al., 2023, sec. 3.3).

- c_c, the coarse caption, from a vision-language captioning model through transformers
  (``AutoProcessor`` + ``AutoModelForImageTextToText``). The default,
  ``Salesforce/blip-image-captioning-large`` (BLIP, BSD-3-Clause, 470M parameters), is open,
  runs in under 2 GB of GPU memory (or slowly on a CPU) and needs no ``trust_remote_code``.
- c_f, the fine caption, attribute phrases: from dataset attribute columns mapped through an
  editable vocabulary (CelebA's ``Eyeglasses`` → "wearing eyeglasses"), or, with no labels,
  from zero-shot open_clip scores over groups of alternative phrases.

The vocabulary file (JSON)::

    {"columns": {"Eyeglasses": "wearing eyeglasses", "Smiling": "smiling"},
     "zero_shot": {"template": "a photo of a {}", "threshold": 0.5,
                   "groups": [["black fur", "white fur", "brown fur"], ["wearing a collar", ""]]}}

A column adds its phrase when its value is positive (1, true, "yes"). A zero-shot group adds
its most probable phrase when that probability is above the threshold; "" stands for "none".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"


class Captioner:
    """Batched coarse captions from a transformers vision-language model (local folder or Hub id)."""

    def __init__(self, model: str = DEFAULT_CAPTIONER, device: str | None = None, prompt: str | None = None,
                 max_new_tokens: int = 30):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(self.device).eval()
        except OSError as error:
            from zeroft.errors import HubUnavailableError

            raise HubUnavailableError(f"Could not load the captioning model {model!r} ({error}).") from error
        self.prompt, self.max_new_tokens = prompt, max_new_tokens

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[str]:
        kwargs = {"images": [i.convert("RGB") for i in images], "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = [self.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return [" ".join(text.split()).strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)]


POSITIVE = {"1", "true", "yes", "y", "t"}


@dataclass
class Vocabulary:
    """Attribute phrases: per dataset column, and zero-shot groups (see the module docstring)."""

    columns: dict[str, str] = field(default_factory=dict)
    template: str = "a photo of a {}"
    threshold: float = 0.5
    groups: list[list[str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        data = json.loads(Path(path).read_text())
        zero_shot = data.get("zero_shot", {})
        return cls(columns=data.get("columns", {}), template=zero_shot.get("template", "a photo of a {}"),
                   threshold=float(zero_shot.get("threshold", 0.5)), groups=zero_shot.get("groups", []))

    def phrases_from_columns(self, attributes: dict) -> list[str]:
        return [phrase for column, phrase in self.columns.items()
                if column in attributes and str(attributes[column]).strip().lower() in POSITIVE]


class ZeroShotAttributes:
    """Attribute phrases scored with open_clip: per group, the most probable phrase above a threshold."""

    def __init__(self, vocabulary: Vocabulary, model_name: str, pretrained: str | None = None, device: str | None = None):
        import open_clip

        self.vocabulary = vocabulary
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if Path(model_name).is_dir():
            from zeroft.encoder import load_open_clip_folder

            model, _ = load_open_clip_folder(model_name)
            self.tokenizer = open_clip.get_tokenizer(f"local-dir:{model_name}")
            self.preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        else:
            model, _, self.preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        self.model = model.to(self.device).eval()
        with torch.no_grad():
            self.text = [self._encode_text(group) for group in vocabulary.groups]

    def _encode_text(self, phrases: list[str]) -> torch.Tensor:
        texts = [self.vocabulary.template.format(p).strip() if p else self.vocabulary.template.format("").strip()
                 for p in phrases]
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True)  # (options, D)

    @torch.no_grad()
    def scores(self, images: list[Image.Image]) -> list[list[torch.Tensor]]:
        """Per image, per group: probabilities over the group's phrases."""
        pixels = torch.stack([self.preprocess(i.convert("RGB")) for i in images]).to(self.device)
        features = self.model.encode_image(pixels, normalize=True)  # (B, D)
        scale = self.model.logit_scale.exp()
        return [[(scale * feature @ text.T).softmax(-1).cpu() for text in self.text] for feature in features]

    def __call__(self, images: list[Image.Image]) -> list[list[str]]:
        chosen = []
        for per_group in self.scores(images):
            phrases = []
            for group, probabilities in zip(self.vocabulary.groups, per_group):
                best = int(probabilities.argmax())
                if group[best] and float(probabilities[best]) >= self.vocabulary.threshold:
                    phrases.append(group[best])
            chosen.append(phrases)
        return chosen


def combine(coarse: str, fine: list[str]) -> str:
    """c = c_c + c_f: the coarse caption, then the attribute phrases."""
    return ", ".join([coarse.strip()] + [p for p in fine if p]) if fine else coarse.strip()
