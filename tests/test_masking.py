"""Automatic and user masks, and the paper's x ⊗ m."""

import numpy as np
import pytest
from PIL import Image

from zeroft import InputError, Masker, ModelUnavailableError, apply_mask, choose_mask
from zeroft.images import load_image
from zeroft.masking import EmptyMaskError, mask_cache

from conftest import square_photo


def test_border_masker_finds_the_object():
    mask = Masker("border")(square_photo())
    assert mask[32, 32] == 1.0 and mask[2, 2] == 0.0
    assert abs((mask >= 0.5).mean() - (32 * 32) / (64 * 64)) < 0.01


def test_border_masker_keeps_background_coloured_parts_inside_the_object():
    # a red square on black with a black patch in the middle and a black stripe cutting its edge
    photo = Image.new("RGB", (64, 64), (0, 0, 0))
    photo.paste((220, 30, 30), (16, 16, 48, 48))
    photo.paste((0, 0, 0), (28, 28, 36, 36))  # enclosed hole
    photo.paste((0, 0, 0), (40, 16, 43, 48))  # 3 px stripe from the top edge to the bottom edge
    mask = Masker("border")(photo)
    assert mask[32, 32] == 1.0 and mask[30, 41] == 1.0
    assert abs((mask >= 0.5).mean() - (32 * 32) / (64 * 64)) < 0.02
    assert mask[2, 2] == 0.0 and mask[32, 55] == 0.0


def test_border_masker_does_not_bridge_wide_gaps_or_erode_the_edge():
    # two squares 20 px apart stay two squares; an object touching the photo's edge keeps its edge
    photo = Image.new("RGB", (64, 64), (0, 0, 0))
    photo.paste((220, 30, 30), (0, 20, 20, 44))
    photo.paste((220, 30, 30), (40, 20, 64, 44))
    mask = Masker("border")(photo)
    assert mask[32, 30] == 0.0
    assert mask[32, 0] == 1.0 and mask[20, 63] == 1.0
    assert abs((mask >= 0.5).sum() - (20 * 24 + 24 * 24)) <= 8


def test_rembg_masker_runs_an_onnx_model_offline(u2net_home):
    mask = Masker("rembg:u2net")(square_photo(size=96, box=(24, 24, 72, 72)))
    assert mask.shape == (96, 96)
    assert mask[48, 48] > 0.9 and mask[4, 4] < 0.1


def test_missing_rembg_model_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("MODEL_CHECKSUM_DISABLED", "1")
    with pytest.raises(ModelUnavailableError, match="isnet-general-use.onnx"):
        Masker("rembg:isnet-general-use")(square_photo())


def test_unknown_masker_is_refused():
    with pytest.raises(InputError, match="unknown masker"):
        Masker("magic")


def test_apply_mask_replaces_the_background():
    photo = square_photo()
    mask = Masker("border")(photo)
    masked = np.asarray(apply_mask(photo, mask, "white"))
    assert tuple(masked[0, 0]) == (255, 255, 255)
    assert tuple(masked[32, 32]) == (220, 30, 30)
    assert apply_mask(photo, mask, "none") is photo


def test_user_mask_wins_over_the_automatic_one(tiny_pipe):
    photo = square_photo()
    user = np.zeros((64, 64), np.float32)
    user[0:10, 0:10] = 1.0  # marks a background corner on purpose
    calls = tiny_pipe.masker.calls
    used = tiny_pipe.encode_object(photo, user).masks[0]
    assert np.array_equal(used.mask, user) and used.source == "given"
    assert tiny_pipe.masker.calls == calls


def test_alpha_channel_serves_as_mask(tiny_pipe):
    rgba = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (8, 8, 24, 24))
    used = tiny_pipe.encode_object(rgba).masks[0]
    assert used.mask[16, 16] == 1.0 and used.mask[40, 40] == 0.0 and used.source == "alpha"


def test_automatic_mask_on_a_flat_photo_is_empty(tiny_pipe):
    with pytest.raises(InputError, match="automatic mask is empty") as caught:
        tiny_pipe.encode_object(Image.new("RGB", (64, 64), (90, 90, 90)))
    message = str(caught.value)  # it failed, so it must not be what the message advises
    assert "border masker found no object" in message and "--mask" in message and "--masker rembg:u2net" in message
    assert "use the automatic mask" not in message


def _transparent_photo() -> Image.Image:
    rgba = square_photo().convert("RGBA")
    rgba.putalpha(0)
    return rgba


@pytest.mark.parametrize("make, mask, masker, source, advice, not_advised", [
    (square_photo, np.zeros((64, 64), np.float32), "border", "given", "give no mask", "--masker"),
    (_transparent_photo, None, "border", "alpha", "--mask", "give no mask"),
    (lambda: Image.new("RGB", (64, 64), (90, 90, 90)), None, "border", "automatic:border", "--masker rembg:u2net",
     "--masker border"),
    (lambda: Image.new("RGB", (64, 64), (90, 90, 90)), None, "rembg:u2net", "automatic:rembg:u2net",
     "--masker border", "--masker rembg"),
])
def test_an_empty_mask_says_what_to_do_by_where_it_came_from(make, mask, masker, source, advice, not_advised,
                                                             monkeypatch):
    monkeypatch.setattr(Masker, "__call__", lambda self, image: np.zeros(image.size[::-1], np.float32))
    photo = load_image(make())
    with pytest.raises(EmptyMaskError, match="empty") as caught:
        choose_mask(photo, mask, Masker(masker))
    assert caught.value.source == source
    assert advice in str(caught.value) and not_advised not in str(caught.value)
    allowed = choose_mask(photo, mask, Masker(masker), allow_empty=True)  # an editor shows it, to be painted on
    assert allowed.source == source and allowed.mask.shape == (64, 64) and allowed.mask.max() == 0.0


def test_settings_record_where_each_mask_came_from(tiny_pipe):
    cutout = square_photo().convert("RGBA")
    cutout.putalpha(0)
    cutout.paste((220, 30, 30, 255), (16, 16, 48, 48))
    user = np.zeros((64, 64), np.float32)
    user[16:48, 16:48] = 1.0
    out = tiny_pipe("x", object_image=[cutout, square_photo(), square_photo()], object_mask=[None, None, user],
                    num_inference_steps=1, seed=0)
    assert out.settings.masks == ["alpha", "automatic:border", "given"]
    assert "masker" not in out.settings.to_dict()  # the automatic masker shows only where it made a mask
    assert tiny_pipe("x", num_inference_steps=1, seed=0).settings.masks == []


def test_choose_mask_is_the_one_rule_user_then_alpha_then_automatic():
    from zeroft.cache import LRUCache
    from zeroft.images import load_image

    rgba = square_photo().convert("RGBA")
    alpha = np.zeros((64, 64), np.uint8)
    alpha[40:60, 40:60] = 255  # the alpha marks another region than the square the border masker sees
    rgba.putalpha(Image.fromarray(alpha))
    photo, masker, cache = load_image(rgba), Masker("border"), LRUCache(4)
    user = np.zeros((32, 32), np.float32)
    user[:4, :4] = 1.0  # half the photo's size: resized to it
    chosen = choose_mask(photo, user, masker, cache)
    assert chosen.source == "given" and chosen.mask.shape == (64, 64)
    assert chosen.mask[:6, :6].min() == 1.0 and chosen.mask[50, 50] == 0.0  # not the alpha
    assert choose_mask(photo, None, masker, cache).mask[50, 50] == 1.0 and masker.calls == 0
    opaque = load_image(square_photo())
    first = choose_mask(opaque, None, masker, cache)
    assert first.mask[32, 32] == 1.0 and np.array_equal(choose_mask(opaque, None, masker, cache).mask, first.mask)
    assert masker.calls == 1  # the second automatic mask came from the cache
    assert first.source == "automatic:border"
    assert choose_mask(opaque, first, masker).source == "automatic:border"  # a ChosenMask keeps its source
    with pytest.raises(InputError, match="their shapes differ"):
        choose_mask(opaque, np.ones((64, 32), np.float32), masker)


def test_one_cache_of_automatic_masks_for_the_process(tiny_pipe):
    """A photo masked outside any pipeline (the app, on upload) is not masked again when a pipeline encodes it."""
    assert tiny_pipe.mask_cache is mask_cache
    photo = square_photo(colour=(30, 200, 90))
    elsewhere = Masker(tiny_pipe.masker.spec)  # another masker of the same spec, as the app holds
    first = choose_mask(load_image(photo), masker=elsewhere, cache=mask_cache)
    calls = tiny_pipe.masker.calls
    encoded = tiny_pipe.encode_object(photo.copy())
    assert tiny_pipe.masker.calls == calls
    assert np.array_equal(encoded.masks[0].mask, first.mask) and encoded.masks[0].source == first.source
    embeds, _ = encoded  # unpacks as (image_embeds, masks); [0] is the embedding to pass as image_embeds=
    assert embeds is encoded.image_embeds and embeds.shape == (1, tiny_pipe.image_embed_dim)
