"""Streamed loading (zeroft.streaming) gives exactly what from_pretrained (+ torchao after it) gives."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torchao.quantization import Int8WeightOnlyConfig, quantize_
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

from zeroft.encoder import build_visual, load_visual_weights
from zeroft.errors import ModelUnavailableError
from zeroft.quantization import quantization_configs
from zeroft.streaming import load_parts_streaming, load_streaming, read_header
from zeroft.streaming_visual import load_visual_streaming, quantize_linears_
from zeroft.tiny import TINY_OPEN_CLIP, tiny_open_clip, tiny_text_encoder, tiny_unet, tiny_vae

MODELS = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
          "text_encoder_2": CLIPTextModelWithProjection}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    tiny_unet().save_pretrained(root / "unet")
    tiny_vae().save_pretrained(root / "vae")
    tiny_text_encoder().save_pretrained(root / "text_encoder")
    torch.manual_seed(1)
    CLIPTextModelWithProjection(tiny_text_encoder().config).save_pretrained(root / "text_encoder_2")
    return root


def run(model, part):
    """One forward pass of each kind of model on fixed inputs."""
    torch.manual_seed(0)
    with torch.no_grad():
        if part == "unet":
            return model(torch.randn(2, 4, 16, 16), 10, encoder_hidden_states=torch.randn(2, 5, 32)).sample
        if part == "vae":
            return model(torch.randn(1, 3, 32, 32), sample_posterior=False).sample
        out = model(torch.tensor([[512, 40, 41, 42, 513]]))
        return out.last_hidden_state if part == "text_encoder" else out.text_embeds


def quantized_parts(tensor):
    """The tensors inside a torchao tensor (qdata, scale, zero point), or the tensor itself."""
    if type(tensor) in (torch.Tensor, torch.nn.Parameter):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [getattr(tensor, name) for name in names]


def assert_same_model(ours, theirs):
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key in theirs_state:
        a, b = quantized_parts(ours_state[key]), quantized_parts(theirs_state[key])
        assert type(ours_state[key]) is type(theirs_state[key]), key
        assert all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b, strict=True)), key
    for (name, a), (_, b) in zip(ours.named_buffers(), theirs.named_buffers(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert [p.requires_grad for p in ours.parameters()] == [p.requires_grad for p in theirs.parameters()]
    assert not ours.training and not theirs.training


@pytest.mark.parametrize("part", list(MODELS))
def test_none_equals_from_pretrained(folder, part):
    theirs = MODELS[part].from_pretrained(folder / part, dtype=torch.float32)
    ours = load_streaming(MODELS[part], folder, subfolder=part, dtype=torch.float32)
    assert_same_model(ours, theirs)
    assert torch.equal(run(ours, part), run(theirs, part))


@pytest.mark.parametrize("part", ["unet", "text_encoder"])
def test_int8_equals_quantizing_after_from_pretrained(folder, part):
    theirs = MODELS[part].from_pretrained(folder / part, dtype=torch.float32)
    quantize_(theirs, Int8WeightOnlyConfig())
    ours = load_streaming(MODELS[part], folder / part, dtype=torch.float32, quantization="int8")
    assert_same_model(ours, theirs)
    assert sum(type(m.weight).__name__ == "Int8Tensor" for m in ours.modules() if isinstance(m, torch.nn.Linear)) > 5
    if part == "text_encoder":  # equal tensors give equal outputs; one forward keeps the test fast
        assert torch.equal(run(ours, part), run(theirs, part))


@pytest.mark.parametrize("part", ["unet", "text_encoder"])
def test_int8_equals_zeroft_load_time_configs(folder, part):
    """The same weights as today's path: TorchAoConfig given to from_pretrained (zeroft.quantization)."""
    unet_config, text_config = quantization_configs("int8", torch.float32)
    theirs = MODELS[part].from_pretrained(folder / part, dtype=torch.float32,
                                          quantization_config=unet_config if part == "unet" else text_config)
    ours = load_streaming(MODELS[part], folder / part, dtype=torch.float32, quantization="int8")
    assert_same_model(ours, theirs)


def test_bf16_casts_as_from_pretrained(folder):
    theirs = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.bfloat16)
    ours = load_streaming(CLIPTextModel, folder / "text_encoder", dtype=torch.bfloat16)
    assert_same_model(ours, theirs)
    assert ours.dtype == torch.bfloat16


def test_sharded_weights(folder, tmp_path):
    tiny_unet().save_pretrained(tmp_path, max_shard_size="60KB")
    assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    ours = load_streaming(UNet2DConditionModel, tmp_path, dtype=torch.float32)
    assert_same_model(ours, UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32))


def test_header_reads_what_safetensors_wrote(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.int64).reshape(2, 3), "b": torch.randn(4).bfloat16(),
               "c": torch.zeros(0, 5), "d": torch.tensor([True, False])}
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    entries = read_header(tmp_path / "t.safetensors")
    assert {k: (e.dtype, e.shape) for k, e in entries.items()} == {k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()}


def test_mismatched_weights_fail_clearly_before_reading(folder, tmp_path):
    state = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "unet" / "config.json").read_text())
    missing = dict(state)
    del missing["conv_in.weight"]
    save_file(missing, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match=r"not in the file, e\.g\. \['conv_in\.weight'\]"):
        load_streaming(UNet2DConditionModel, tmp_path, dtype=torch.float32)
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match=r"not in the model, e\.g\. \['extra\.weight'\]"):
        load_streaming(UNet2DConditionModel, tmp_path, dtype=torch.float32)
    save_file({**state, "conv_in.bias": torch.zeros(3)}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match="shape"):
        load_streaming(UNet2DConditionModel, tmp_path, dtype=torch.float32)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelUnavailableError, match="no safetensors weights"):
        load_streaming(UNet2DConditionModel, tmp_path, dtype=torch.float32)
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_streaming(UNet2DConditionModel, tmp_path / "absent", dtype=torch.float32)


def test_missing_shard_fails_clearly(tmp_path):
    tiny_unet().save_pretrained(tmp_path, max_shard_size="60KB")
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    (tmp_path / sorted(set(index["weight_map"].values()))[-1]).unlink()
    with pytest.raises(ModelUnavailableError, match="names the shard"):
        load_streaming(UNet2DConditionModel, tmp_path, dtype=torch.float32)


def tiny_transformers_vision() -> CLIPVisionModelWithProjection:
    vision = TINY_OPEN_CLIP["vision_cfg"]
    torch.manual_seed(2)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=vision["width"], intermediate_size=4 * vision["width"], num_hidden_layers=2,
        num_attention_heads=vision["width"] // vision["head_width"], image_size=vision["image_size"],
        patch_size=vision["patch_size"], projection_dim=TINY_OPEN_CLIP["embed_dim"], hidden_act="gelu"))


@pytest.mark.parametrize("layout", ["whole_clip", "tower", "transformers"])
@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_visual_tower_equals_load_visual_weights(tmp_path, layout, quantization):
    model_cfg = TINY_OPEN_CLIP
    if layout == "transformers":
        vision = tiny_transformers_vision()
        model_cfg = {**TINY_OPEN_CLIP, "vision_cfg": {**TINY_OPEN_CLIP["vision_cfg"], "layers": 2}}
        state = vision.state_dict()
    else:
        clip = tiny_open_clip(3)
        state = clip.state_dict() if layout == "whole_clip" else clip.visual.state_dict()
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    theirs = build_visual(model_cfg)
    load_visual_weights(theirs, weights)
    theirs.eval()
    if quantization == "int8":
        quantize_(theirs, Int8WeightOnlyConfig())
    ours = load_visual_streaming(model_cfg, weights, dtype=torch.float32, quantization=quantization)
    assert_same_model(ours, theirs)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(pixels), theirs(pixels))


def test_pipeline_parts_take_their_classes_from_the_index(folder):
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "safety_checker": [None, None]}))
    parts = load_parts_streaming(folder, ["unet", "text_encoder"], dtype=torch.float32, quantization="int8")
    assert type(parts["unet"]) is UNet2DConditionModel and type(parts["text_encoder"]) is CLIPTextModel
    assert type(parts["text_encoder"].get_submodule("encoder.layers.0.mlp.fc1").weight).__name__ == "Int8Tensor"
    with pytest.raises(ModelUnavailableError, match="lists no model 'safety_checker'"):
        load_parts_streaming(folder, ["safety_checker"], dtype=torch.float32)


def test_older_transformers_layout_is_renamed_as_transformers_renames_it(folder, tmp_path):
    """SD1.5's text_encoder file has text_model.* keys and a position_ids tensor (transformers 4)."""
    state = load_file(str(folder / "text_encoder" / "model.safetensors"))
    legacy = {f"text_model.{k}": v for k, v in state.items()}
    legacy["text_model.embeddings.position_ids"] = torch.arange(32)[None]
    save_file(legacy, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "text_encoder" / "config.json").read_text())
    ours = load_streaming(CLIPTextModel, tmp_path, dtype=torch.float32)
    assert_same_model(ours, CLIPTextModel.from_pretrained(tmp_path, dtype=torch.float32))


def test_quantizing_a_built_tower_in_place_is_torchao_quantize():
    ours, theirs = tiny_open_clip(4).visual, tiny_open_clip(4).visual
    quantize_(theirs, Int8WeightOnlyConfig())
    assert quantize_linears_(ours) is ours
    assert_same_model(ours.eval(), theirs.eval())
    assert quantize_linears_(tiny_open_clip(4).visual, "none").transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.float32
