"""Bad input: one test per class, each ending in an InputError with a plain message, or a clean image."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from zeroft import InputError, load_image, load_mask, prepare_mask
from zeroft.images import MAX_SIDE

from conftest import square_photo


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_a_folder_is_named_a_folder_not_missing(tmp_path):
    with pytest.raises(InputError) as caught:
        load_image(tmp_path, "reference photo")
    assert "is a folder" in str(caught.value) and "image file" in str(caught.value)
    assert "does not exist" not in str(caught.value)
    with pytest.raises(InputError, match="is a folder"):
        load_mask(tmp_path)


@pytest.mark.parametrize("device", ["nonsense", "meta", "cuda:7"])
def test_an_unusable_device_is_refused_before_loading(tiny_checkpoint, device, monkeypatch):
    import torch

    from zeroft import load_pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=f"[Dd]evice '{device}'"):
        load_pipeline(tiny_checkpoint, device=device)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(path)


def test_non_image_bytes():
    with pytest.raises(InputError, match="not an image"):
        load_image(b"%PDF-1.4 this is not a picture at all" * 10)


def test_truncated_png():
    data = _png_bytes(square_photo(size=128))
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:2000])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(path)


def test_cmyk_becomes_rgb():
    cmyk = square_photo().convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG")
    loaded = load_image(buffer.getvalue())
    assert loaded.rgb.mode == "RGB" and loaded.alpha is None
    red = np.asarray(loaded.rgb)[32, 32]
    assert red[0] > 150 and red[2] < 100


def test_16_bit_grayscale_is_scaled_not_clipped():
    array = np.full((32, 32), 30000, dtype=np.uint16)
    loaded = load_image(_png_bytes(Image.fromarray(array)))
    value = np.asarray(loaded.rgb)[0, 0, 0]
    assert abs(int(value) - round(30000 / 65535 * 255)) <= 1  # mid-grey, not clipped to white


def test_16_bit_array():
    loaded = load_image(np.full((20, 20, 3), 65535, dtype=np.uint16))
    assert np.asarray(loaded.rgb).min() == 255


def test_palette_image():
    palette = square_photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    loaded = load_image(_png_bytes(palette))
    assert loaded.rgb.mode == "RGB" and loaded.alpha is None


def test_alpha_becomes_the_mask():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (10, 10, 30, 30))
    loaded = load_image(_png_bytes(rgba))
    assert loaded.alpha is not None
    assert loaded.alpha[20, 20] == 1.0 and loaded.alpha[0, 0] == 0.0


def test_opaque_alpha_is_not_a_mask():
    loaded = load_image(_png_bytes(square_photo().convert("RGBA")))
    assert loaded.alpha is None


def test_palette_with_transparency_gives_alpha():
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (8, 8, 24, 24))
    loaded = load_image(_png_bytes(image, transparency=0))
    assert loaded.alpha is not None and loaded.alpha[16, 16] == 1.0 and loaded.alpha[0, 0] == 0.0


def test_exif_rotation_is_honoured():
    wide = Image.new("RGB", (60, 30), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 10, 30))  # a white stripe on the left
    exif = wide.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    wide.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(buffer.getvalue())
    assert loaded.rgb.size == (30, 60)
    pixels = np.asarray(loaded.rgb).mean(-1)
    assert pixels[:10].mean() > 200 and pixels[-10:].mean() < 50  # the stripe is now at the top


def test_too_small_is_rejected():
    with pytest.raises(InputError, match="at least 16x16"):
        load_image(_png_bytes(Image.new("RGB", (15, 40))))


def test_huge_image_is_downscaled():
    loaded = load_image(np.zeros((3000, 2500, 3), dtype=np.uint8))
    assert max(loaded.rgb.size) == MAX_SIDE
    assert abs(loaded.rgb.width / loaded.rgb.height - 2500 / 3000) < 0.01


def test_decompression_bomb_is_refused():
    # A 1-bit 20000x20000 PNG compresses to ~50 kB; decoding it would need 400 M pixels.
    bomb = Image.new("1", (20000, 20000), 0)
    data = _png_bytes(bomb, optimize=True)
    assert len(data) < 1_000_000
    with pytest.raises(InputError, match="too large|decompression bomb"):
        load_image(data)


def test_nan_array_is_rejected():
    array = np.zeros((32, 32, 3), dtype=np.float32)
    array[3, 3, 1] = math.nan
    with pytest.raises(InputError, match="NaN"):
        load_image(array)


def test_wrong_array_shape_is_rejected():
    with pytest.raises(InputError, match="HxW"):
        load_image(np.zeros((32, 32, 5), dtype=np.uint8))


def test_mask_size_mismatch_is_rejected():
    with pytest.raises(InputError, match="shapes differ"):
        prepare_mask(np.ones((30, 60), np.float32), (64, 64))


def test_mask_of_same_shape_other_size_is_resized():
    mask = prepare_mask(np.ones((32, 32), np.float32), (64, 64))
    assert mask.shape == (64, 64)


def test_empty_mask_is_rejected():
    with pytest.raises(InputError, match="mask is empty"):
        prepare_mask(np.zeros((64, 64), np.float32), (64, 64))


def test_empty_mask_file_is_rejected_by_the_pipeline(tiny_pipe, photo):
    with pytest.raises(InputError, match="mask is empty"):
        tiny_pipe("x", object_image=photo, object_mask=_png_bytes(Image.new("L", (64, 64), 0)), num_inference_steps=1)


def test_soft_and_binary_masks():
    soft = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert 0 < prepare_mask(soft, (64, 64))[32, 10] < 1
    assert set(np.unique(prepare_mask(soft, (64, 64), binary=True))) <= {0.0, 1.0}


def test_mask_reads_luminance_and_alpha():
    grey = load_mask(_png_bytes(Image.new("L", (20, 20), 255)))
    assert grey.min() == 1.0
    strokes = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    strokes.paste((255, 0, 0, 255), (5, 5, 10, 10))
    painted = load_mask(_png_bytes(strokes))
    assert painted[7, 7] == 1.0 and painted[0, 0] == 0.0


@pytest.mark.parametrize("field,value,message", [
    ("text_guidance", 31.0, "between 0 and 30"),
    ("text_guidance", -0.5, "between 0 and 30"),
    ("object_guidance", math.nan, "finite"),
    ("object_guidance", math.inf, "finite"),
    ("num_inference_steps", 0, "between 1 and 150"),
    ("num_inference_steps", 151, "between 1 and 150"),
    ("num_inference_steps", 2.5, "whole number"),
    ("num_images", 0, "between 1 and 8"),
    ("num_images", 9, "between 1 and 8"),
    ("height", 60, "multiple of 8"),
    ("width", 100, "multiple of 8"),
])
def test_out_of_range_settings(tiny_pipe, photo, field, value, message):
    with pytest.raises(InputError, match=message):
        tiny_pipe("a red square", object_image=photo, **{field: value})


def test_prompt_too_long(tiny_pipe, photo):
    with pytest.raises(InputError, match="at most"):
        tiny_pipe("x" * 5000, object_image=photo)


def test_photo_and_embeds_together_are_rejected(tiny_pipe, photo):
    with pytest.raises(InputError, match="either"):
        tiny_pipe("x", object_image=photo, image_embeds=tiny_pipe.encode_object(photo)[0])
