"""Quantization: int8 (torchao) on CPU within tolerance, bitsandbytes refused clearly without CUDA."""

import numpy as np
import pytest
import torch

import zeroft
from zeroft import InputError, ZeroFTPipeline
from zeroft.quantization import linear_weight_bytes

# Mean absolute pixel deviation (0..1 scale) allowed between int8 and fp32 images.
INT8_MEAN_TOLERANCE = 0.01
INT8_MAX_TOLERANCE = 0.05


def test_int8_is_close_to_fp32_and_smaller(tiny_checkpoint, tiny_pipe, photo):
    int8 = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cpu", quantization="int8")
    int8.set_progress_bar_config(disable=True)
    assert int8.unet.conv_in.weight.dtype == torch.float32  # unquantized layers keep the compute dtype
    ratio = linear_weight_bytes(tiny_pipe.unet) / linear_weight_bytes(int8.unet)
    assert ratio >= 3.5, ratio
    kwargs = dict(object_image=photo, seed=0, num_inference_steps=3, output_type="np")
    reference = tiny_pipe("a red square", **kwargs).images
    quantized = int8("a red square", **kwargs).images
    deviation = np.abs(reference - quantized)
    assert deviation.mean() < INT8_MEAN_TOLERANCE and deviation.max() < INT8_MAX_TOLERANCE


def test_int8_streams_every_network_it_quantizes(tiny_checkpoint, tiny_pipe, monkeypatch):
    """int8 reads the UNet, text encoder and object encoder tensor by tensor (zeroft.streaming), each Linear
    quantized as it arrives; from_pretrained never builds them in full precision first."""
    from diffusers import UNet2DConditionModel

    import zeroft.streaming

    streamed = []
    real = zeroft.streaming.load_streaming
    monkeypatch.setattr(zeroft.streaming, "load_streaming",
                        lambda cls, *a, **k: streamed.append(k.get("subfolder")) or real(cls, *a, **k))
    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("built whole")))
    int8 = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cpu", quantization="int8")
    assert sorted(streamed) == ["text_encoder", "unet"]
    for name in ("unet", "text_encoder", "object_encoder"):
        assert linear_weight_bytes(getattr(tiny_pipe, name)) / linear_weight_bytes(getattr(int8, name)) > 2.5, name


def test_int8_cannot_be_saved(tiny_checkpoint, tmp_path):
    int8 = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cpu", quantization="int8")
    with pytest.raises(ValueError, match="quantized"):
        int8.save_pretrained(tmp_path / "x")


@pytest.mark.parametrize("mode", ["bnb-8bit", "bnb-4bit"])
def test_bitsandbytes_needs_cuda(tiny_checkpoint, mode):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="needs an NVIDIA GPU"):
        ZeroFTPipeline.from_pretrained(tiny_checkpoint, quantization=mode)


def test_unknown_mode(tiny_checkpoint):
    with pytest.raises(InputError, match="Unknown quantization"):
        ZeroFTPipeline.from_pretrained(tiny_checkpoint, quantization="int3")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["bnb-8bit", "bnb-4bit"])
def test_bitsandbytes_on_gpu(tiny_checkpoint, photo, mode):
    pipe = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cuda", quantization=mode)
    reference = ZeroFTPipeline.from_pretrained(tiny_checkpoint, device="cuda")
    assert linear_weight_bytes(pipe.unet) < linear_weight_bytes(reference.unet)
    out = pipe("a red square", object_image=photo, seed=0, num_inference_steps=2, output_type="np").images
    assert np.isfinite(out).all()


def test_every_model_the_app_offers_generates_with_every_quantization_it_offers(photo):
    """On this machine: the embedded model (its encoder has an attention pool whose weights int8 must leave alone)
    with none and int8, through the app's own handler."""
    from webapp.catalogue import Checkpoints
    from webapp.handlers import Handlers
    from webapp.layout import quantization_choices

    offered = Checkpoints()
    handlers = Handlers(offered)
    editor = {"background": zeroft.load_image(photo), "layers": [], "composite": None}
    for name in offered.names:
        for mode in quantization_choices():
            gallery, settings, _ = handlers.generate(editor, "one object on a white background", "", 5.0, 3.0, 2, 1, 0,
                                                     False, 64, mode, name, progress=lambda *args, **kwargs: None)
            assert len(gallery) == 1 and settings["quantization"] == mode, (name, mode)


def test_int8_leaves_the_linears_a_functional_op_reads_in_full_precision(photo):
    """The embedded model's encoder is a ModifiedResNet whose only Linears are its attention pool's, handed to
    F.multi_head_attention_forward: int8 keeps them (the encoder then equals fp32's exactly) and quantizes the UNet."""
    fp32 = ZeroFTPipeline.from_pretrained("assets/zeroft-toy", device="cpu")
    int8 = ZeroFTPipeline.from_pretrained("assets/zeroft-toy", device="cpu", quantization="int8")
    pool = int8.object_encoder.visual.attnpool
    assert [type(m.weight).__name__ for m in pool.modules() if isinstance(m, torch.nn.Linear)] == ["Parameter"] * 4
    assert linear_weight_bytes(fp32.unet) / linear_weight_bytes(int8.unet) > 2.5
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(int8.object_encoder(pixels), fp32.object_encoder(pixels))
