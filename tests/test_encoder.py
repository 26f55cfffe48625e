"""The object encoder f_o(x ⊗ m): masking, cropping, freezing, loading only safetensors."""

import numpy as np
import pytest
import torch

from zeroft import EncoderConfig, Masker, ObjectEncoder
from zeroft.tiny import tiny_encoder

from conftest import square_photo


def _embed(encoder, photo):
    mask = Masker("border")(photo)
    return encoder(encoder.preprocess(photo, mask)[None])


def test_embedding_shape_and_frozen():
    encoder = tiny_encoder()
    out = _embed(encoder, square_photo())
    assert out.shape == (1, encoder.embed_dim)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_background_does_not_reach_the_encoder():
    """x ⊗ m: the same object on two backgrounds gives the same embedding."""
    encoder = tiny_encoder()
    on_blue = square_photo(background=(30, 30, 220))
    on_green = square_photo(background=(20, 180, 40))
    assert torch.allclose(_embed(encoder, on_blue), _embed(encoder, on_green), atol=1e-6)


def test_without_masking_the_background_leaks():
    encoder = tiny_encoder(config=EncoderConfig(model_name="tiny", pretrained=None, path="encoder", background_fill="none"))
    on_blue = square_photo(background=(30, 30, 220))
    on_green = square_photo(background=(20, 180, 40))
    assert not torch.allclose(_embed(encoder, on_blue), _embed(encoder, on_green), atol=1e-3)


def test_crop_to_object_removes_position():
    encoder = tiny_encoder()
    left = square_photo(box=(4, 4, 36, 36))
    right = square_photo(box=(28, 28, 60, 60))
    assert torch.allclose(_embed(encoder, left), _embed(encoder, right), atol=1e-6)


def test_local_folder_needs_safetensors(tmp_path, tiny_checkpoint):
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((tiny_checkpoint / "encoder" / "open_clip_config.json").read_text())
    torch.save({}, folder / "open_clip_pytorch_model.bin")  # a pickle must never be read
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        ObjectEncoder.from_config(EncoderConfig(model_name="tiny", pretrained=None, path="encoder"), tmp_path)


def test_local_folder_round_trip(tiny_checkpoint):
    encoder = ObjectEncoder.from_config(EncoderConfig(model_name="tiny", pretrained=None, path="encoder"), tiny_checkpoint)
    reference = tiny_encoder(seed=0)
    photo = square_photo()
    assert torch.equal(_embed(encoder, photo), _embed(reference, photo))


def test_hub_encoder_without_network_fails_clearly():
    from zeroft import HubUnavailableError

    with pytest.raises(HubUnavailableError, match="Hub"):
        ObjectEncoder.from_config(EncoderConfig(model_name="RN50", pretrained="openai"))
