"""train.train on a FLUX.1 base (issue 35): the paper's recipe on the object attention with the rectified-flow loss,
export to a ZeroFTFluxPipeline that stock diffusers' load_ip_adapter reads, kill/resume (adapter and LoRA),
2 processes, FLUX.1-schnell's layout (no embedded guidance) as a base.

The runs reuse test_train's command line and subprocess helpers on a tiny FLUX.1 with the real structure
(``make_tiny_checkpoint(..., backbone="flux")``), trained at 64 px.
"""


import numpy as np
import pytest
import torch

import train.train as trainer
from train.config import TrainConfig
from train.tiny_data import write_domain_imagefolder, write_general_jsonl
from zeroft import InputError, ZeroFTConfig, ZeroFTFluxPipeline, load_pipeline
from zeroft.tiny import make_tiny_checkpoint

from conftest import square_photo
from test_train import _argv, _assert_same, _weights, kill_and_resume, two_ranks

FLUX_RUN = ("--resolution", "64", "--max_train_steps", "3", "--checkpointing_steps", "2", "--use_ema",
            "--train", "adapter", "--weighting_scheme", "logit_normal")
LORA_RUN = (*FLUX_RUN, "--train", "lora", "--lora_rank", "4")  # the adapter's run, with a LoRA (the last --train wins)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-flux")
    folder = make_tiny_checkpoint(root / "flux", backbone="flux")
    return {"base": folder / "base", "encoder": folder / "encoder", "domain": write_domain_imagefolder(root / "domain"),
            "general": write_general_jsonl(root / "general"), "root": root}


def _recorded_run(argv: list[str]):
    """train.train's main on ``argv``, with what the transformer received in its training calls: (export, calls)."""
    received = []

    def record(transformer, args, kwargs):
        if transformer.training:
            received.append({name: kwargs[name] for name in ("timestep", "guidance", "joint_attention_kwargs")})

    build_models = trainer.build_models

    def build_models_with_hook(config):
        models = build_models(config)
        models.unet.register_forward_pre_hook(record, with_kwargs=True)
        return models

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "build_models", build_models_with_hook)
        export = trainer.main(argv)
    return export, received


@pytest.fixture(scope="module")
def reference(setup):
    """One uninterrupted run, with what the transformer received in its training calls recorded."""
    return _recorded_run(_argv(setup, setup["root"] / "straight", *FLUX_RUN))


@pytest.fixture(scope="module")
def lora_reference(setup):
    """One uninterrupted --train lora run."""
    return trainer.main(_argv(setup, setup["root"] / "lora", *LORA_RUN))


def test_flux_trains_its_object_attention_by_flow_matching(reference):
    export, received = reference
    assert len(received) == 3
    for call in received:
        assert call["guidance"].tolist() == [1.0, 1.0]  # embedded guidance 1 in training
        assert ((call["timestep"] > 0) & (call["timestep"] < 1)).all()  # σ, as FluxPipeline passes t / 1000
        assert call["joint_attention_kwargs"]["ip_adapter_image_embeds"][0].shape == (2, 1, 16)
    config = ZeroFTConfig.load(export)
    assert config.backbone == "flux" and not config.unet_tuned and config.training["weighting_scheme"] == "logit_normal"
    assert not (export / "unet").exists() and not (export / "transformer").exists()


def test_the_export_generates_and_stock_diffusers_loads_its_adapter(reference):
    from diffusers import FluxPipeline

    export, _ = reference
    pipe = load_pipeline(export, device="cpu")
    assert isinstance(pipe, ZeroFTFluxPipeline)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("an object on a blue background", object_image=square_photo(), object_guidance=2.0,
               num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    stock = FluxPipeline.from_pretrained(export / "base")
    stock.load_ip_adapter(str(export), subfolder="", weight_name="adapter.safetensors",
                          image_encoder_pretrained_model_name_or_path=None)
    trained = _weights(export)
    assert torch.equal(stock.transformer.encoder_hid_proj.image_projection_layers[0].image_embeds.weight,
                       trained["image_proj.proj.weight"])


def test_flux_lora_sigkill_and_resume_end_with_the_same_weights(setup, lora_reference, tmp_path):
    """kill -9 after the step-2 save, then --resume latest: the uninterrupted run's adapter, its EMA and the LoRA, bit
    for bit (the LoRA's weights and optimizer state are in the training state as the adapter's are; one test for
    both trained parts, since a --train lora run trains the adapter too)."""
    output = tmp_path / "killed"
    final = kill_and_resume(_argv(setup, output, *LORA_RUN, "--resume", "latest"), output)
    weights = _weights(final)
    assert any(key.startswith("lora.") for key in weights)
    _assert_same(weights, _weights(lora_reference))


def test_flux_schnell_trains_without_embedded_guidance_and_its_export_generates(setup, tmp_path):
    """FLUX.1-schnell's layout (guidance_embeds false: no guidance embedding) as the base: the transformer gets no
    guidance in training, and the export generates with none (GenerationSettings leaves it out)."""
    from zeroft.tiny import tiny_flux_base_pipeline

    base = tmp_path / "schnell"
    tiny_flux_base_pipeline(guidance_embeds=False).save_pretrained(base)
    export, received = _recorded_run(_argv({**setup, "base": base}, tmp_path / "run", "--train", "adapter",
                                           "--cache_latents"))  # (and the latent cache in a run)
    assert len(received) == 2 and all(call["guidance"] is None for call in received)
    pipe = load_pipeline(export, device="cpu")
    assert isinstance(pipe, ZeroFTFluxPipeline) and not pipe.transformer.config.guidance_embeds
    pipe.set_progress_bar_config(disable=True)
    out = pipe("an object", object_image=square_photo(), object_guidance=2.0, num_inference_steps=2, seed=0,
               output_type="np")
    assert np.isfinite(out.images).all() and "embedded_guidance" not in out.settings.to_dict()


def test_cached_latents_are_the_uncached_ones_and_an_image_seen_again_skips_the_vae(setup):
    """--cache_latents keeps each image's VAE posterior: latents drawn with the same generator match the uncached
    path's, and only images not seen before go through the encoder."""
    from diffusers import AutoencoderKL

    from train.losses import LatentCache, encode_latents

    vae = AutoencoderKL.from_pretrained(setup["base"] / "vae")
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cache = LatentCache(vae)
    keys = [("domain", 0), ("general", 4), ("domain", 1)]
    first = encode_latents(vae, pixels[:2], torch.Generator().manual_seed(1), cache, keys[:2])
    again = encode_latents(vae, pixels[1:], torch.Generator().manual_seed(2), cache, keys[1:])  # one seen, one new
    assert cache.encoded == 3
    for got, rows, seed in ((first, slice(0, 2), 1), (again, slice(1, 3), 2)):
        assert torch.allclose(got, encode_latents(vae, pixels[rows], torch.Generator().manual_seed(seed)), atol=1e-5)
    assert TrainConfig.__dataclass_fields__["cache_latents"].default is False


def test_flux_two_processes_hold_identical_weights(setup, tmp_path):
    ranks = two_ranks(_argv(setup, tmp_path / "run", "--max_train_steps", "1", "--train", "adapter"), tmp_path)
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ZeroFTConfig.load(tmp_path / "run" / "final").training["processes"] == 2


def test_flux_refuses_whole_network_tuning_and_sd_noise_settings(setup, tmp_path):
    settings = dict(base_model=setup["base"], encoder=setup["encoder"], domain_data=setup["domain"],
                    general_data=setup["general"], resolution=32, output_dir=tmp_path / "x", masker="border")
    with pytest.raises(InputError, match="use --train lora"):
        trainer.build_models(TrainConfig(**settings, train="whole"))
    with pytest.raises(InputError, match="flow matching"):
        trainer.build_models(TrainConfig(**settings, train="adapter", prediction_type="epsilon"))


def test_the_gpu_benchmarks_flux_rows_run_at_toy_size(tmp_path):
    """bench/gpu.sh --backbone flux on a CPU (--dry-run): the same code path as on the GPU, at toy size."""
    from bench.gpu_bench import main as gpu_bench

    result = gpu_bench(["--dry-run", "--backbone", "flux", "--steps", "1", "--repeats", "1", "--out", str(tmp_path)])
    row = result["backbones"]["flux"]["rows"]["fp16"]
    assert {"diffusers_ip_adapter", "zeroft_equal_weights", "zeroft_one_branch", "zeroft_three_branches"} == set(
        row["images_per_second"]) and row["ratio_one_branch"] > 0


def test_flux_lora_trains_with_the_adapter_and_stock_diffusers_loads_both(lora_reference):
    """--train lora: a LoRA of the transformer's attention trains beside the object attention; the export holds it in
    the file stock load_lora_weights reads, zeroft loads it, and zeroft's images at w_text = w_obj = 1 are stock
    FluxPipeline's with the LoRA and the adapter loaded."""
    from diffusers import FluxPipeline
    from safetensors.torch import load_file

    export = lora_reference
    config = ZeroFTConfig.load(export)
    assert config.lora_weights == "pytorch_lora_weights.safetensors" and config.training["trained"] == "lora"
    lora = load_file(str(export / config.lora_weights))
    assert any("lora_B" in key and value.abs().sum() > 0 for key, value in lora.items())  # B moved off zero
    base = load_file(str(export / "base" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert not any("lora" in key or "base_layer" in key for key in base)  # the base stays a plain transformer
    ours = load_pipeline(export, device="cpu")
    ours.set_progress_bar_config(disable=True)
    embeds = ours.encode_object(square_photo())[0]
    latents = torch.randn((1, 16 * 16, 4), generator=torch.Generator().manual_seed(0))
    mine = ours("an object", image_embeds=embeds, text_guidance=1.0, object_guidance=1.0, num_inference_steps=2,
                latents=latents.clone(), output_type="np").images
    def stock(lora: bool):
        pipe = FluxPipeline.from_pretrained(export / "base")
        if lora:
            pipe.load_lora_weights(str(export), weight_name=config.lora_weights)
        pipe.load_ip_adapter(str(export), subfolder="", weight_name="adapter.safetensors",
                             image_encoder_pretrained_model_name_or_path=None)
        pipe.set_progress_bar_config(disable=True)
        return pipe("an object", ip_adapter_image_embeds=[embeds[:, None]],
                    negative_ip_adapter_image_embeds=[ours.null_object()[:, None]], num_inference_steps=2,
                    latents=latents.clone(), height=64, width=64, output_type="np").images

    assert abs(mine - stock(lora=True)).max() < 1e-4
    assert abs(mine - stock(lora=False)).max() > 1e-4  # the LoRA changes the images
