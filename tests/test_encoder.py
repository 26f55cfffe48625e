"""The object encoder f_o(x ⊗ m): masking, cropping, freezing, loading only safetensors."""

import numpy as np
import pytest
import torch

from zeroft import EncoderConfig, Masker, ModelUnavailableError, ObjectEncoder
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
    with pytest.raises(ModelUnavailableError, match="only safetensors"):
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


def _views_encoder(views):
    return tiny_encoder(config=EncoderConfig(model_name="tiny", pretrained=None, path="encoder", views=views))


def test_views_make_the_embedding_blind_to_orientation():
    """'rot4' averages over quarter turns, 'dihedral' also over mirror images: turning or mirroring
    the photo leaves the embedding unchanged; without views it changes."""
    photo = square_photo(box=(8, 20, 40, 44))
    photo.paste((240, 220, 30), (8, 20, 20, 28))  # a mark in one corner: no turn or mirror maps the object onto itself
    pixels = _views_encoder("none").preprocess(photo, Masker("border")(photo))[None]
    turned, mirrored = torch.rot90(pixels, 1, dims=(-2, -1)), torch.flip(pixels, dims=(-1,))
    plain, rot4, dihedral = _views_encoder("none"), _views_encoder("rot4"), _views_encoder("dihedral")
    assert not torch.allclose(plain(pixels), plain(turned), atol=1e-4)
    assert torch.allclose(rot4(pixels), rot4(turned), atol=1e-5)
    assert not torch.allclose(rot4(pixels), rot4(mirrored), atol=1e-4)
    assert torch.allclose(dihedral(pixels), dihedral(mirrored), atol=1e-5)
    assert torch.allclose(dihedral(pixels), dihedral(turned), atol=1e-5)
    batch = torch.cat([pixels, turned])  # a batch keeps its images apart
    assert torch.allclose(rot4(batch)[1], rot4(turned)[0], atol=1e-5)
    assert torch.allclose(plain(batch)[1], plain(turned)[0], atol=1e-5)


def test_unknown_views_are_refused():
    with pytest.raises(ValueError, match="unknown encoder views"):
        _views_encoder("sideways")


def test_pipeline_views_are_saved_and_never_served_stale(tiny_checkpoint, tmp_path, photo):
    from zeroft import ZeroFTPipeline

    pipe = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cpu")
    photo.paste((240, 220, 30), (16, 16, 28, 24))  # asymmetric, so mirror images differ
    before = pipe.encode_object(photo)[0]
    pipe.set_encoder_views("dihedral")
    after = pipe.encode_object(photo)[0]
    assert not torch.allclose(before, after, atol=1e-4)  # the cached "none" embedding was not reused
    pipe.save_pretrained(tmp_path / "ckpt")
    loaded = ZeroFTPipeline.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.zeroft_config.encoder.views == "dihedral" and loaded.object_encoder.config.views == "dihedral"
    assert torch.allclose(loaded.encode_object(photo)[0], after, atol=1e-5)


def test_preprocessing_stays_on_the_cpu_wherever_the_network_goes(tiny_checkpoint):
    """Pixels are prepared on the CPU (DataLoader workers, the pipeline) even after .to(GPU) or a half cast.

    On an H200, training with the encoder on CUDA failed: the mean/std buffers had followed the network
    to the GPU and met CPU pixels. The meta device stands in for the GPU here.
    """
    encoder = ObjectEncoder.from_config(EncoderConfig(model_name="tiny", pretrained=None, path="encoder"), tiny_checkpoint)
    photo, mask = square_photo(), np.ones((64, 64), np.float32)
    before = encoder.preprocess(photo, mask)
    encoder.to("meta", dtype=torch.float16)
    after = encoder.preprocess(photo, mask)
    assert after.device.type == "cpu" and after.dtype == torch.float32
    assert torch.equal(before, after)
