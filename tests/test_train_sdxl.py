"""train.train on an SDXL base: its text and size conditions, export to a ZeroFTXLPipeline, kill/resume, 2 processes.

The runs reuse test_train's command line and subprocess helpers on a tiny real SDXL
(``make_tiny_checkpoint(..., backbone="sdxl")``), trained at 48 px from 64 px photos, so that the
size conditions (original 64, target 48) differ from what a missing record would give.
"""

import json

import pytest
import torch
from PIL import Image

import train.train as trainer
from train.data import MixedTrainingData, Regularization, collate, open_streams, time_ids
from train.losses import TextEncoderCache
from train.sources import Columns
from train.tiny_data import write_domain_imagefolder, write_general_jsonl
from zeroft import ZeroFTConfig, ZeroFTXLPipeline, load_pipeline
from zeroft.tiny import tiny_base_pipeline, tiny_sdxl_base_pipeline

from conftest import square_photo
from test_train import _argv, _assert_same, _weights, kill_and_resume, two_ranks

SDXL_RUN = ("--resolution", "48", "--max_train_steps", "3", "--checkpointing_steps", "2", "--use_ema")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_sdxl_checkpoint):
    root = tmp_path_factory.mktemp("train-sdxl")
    return {
        "base": tiny_sdxl_checkpoint / "base",
        "encoder": tiny_sdxl_checkpoint / "encoder",
        "domain": write_domain_imagefolder(root / "domain"),
        "general": write_general_jsonl(root / "general"),
        "root": root,
    }


@pytest.fixture(scope="module")
def reference(setup):
    """One uninterrupted SDXL run (whole UNet, EMA, a final validation grid), with what the UNet received
    in its training calls recorded by a forward pre-hook."""
    received = []

    def record(unet, args, kwargs):
        if unet.training:  # the validation grid's calls are not training steps
            received.append({name: value for name, value in kwargs["added_cond_kwargs"].items()})

    build_models = trainer.build_models

    def build_models_with_hook(config):
        models = build_models(config)
        models.unet.register_forward_pre_hook(record, with_kwargs=True)
        return models

    photo = setup["root"] / "ref.png"
    square_photo().save(photo)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "build_models", build_models_with_hook)
        export = trainer.main(_argv(setup, setup["root"] / "straight", *SDXL_RUN, "--validation_images", str(photo),
                                    "--validation_prompts", "an object", "--validation_inference_steps", "1"))
    return export, received


def test_dropped_captions_are_zeros_and_time_ids_follow_the_crop(tmp_path):
    base = tiny_sdxl_base_pipeline(0)
    conditions = TextEncoderCache(base, pooled=True)(["", "a red square", ""], "cpu")
    hidden, pooled = conditions["encoder_hidden_states"], conditions["text_embeds"]  # (3, T, 64), (3, 32)
    assert hidden.shape[0] == pooled.shape[0] == 3 and hidden.shape[-1] == 64 and pooled.shape[-1] == 32
    for row in (0, 2):  # SDXL base's unconditional text, as zeroft's inference uses for an empty negative prompt
        assert torch.count_nonzero(hidden[row]) == 0 and torch.count_nonzero(pooled[row]) == 0
    tokens, negative, text_embeds, negative_pooled = base.encode_prompt(
        "a red square", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
    torch.testing.assert_close(hidden[1], tokens[0], rtol=0, atol=1e-6)  # diffusers' own encode_prompt
    torch.testing.assert_close(pooled[1], text_embeds[0], rtol=0, atol=1e-6)
    assert torch.equal(hidden[0], negative[0]) and torch.equal(pooled[0], negative_pooled[0])
    sd = TextEncoderCache(tiny_base_pipeline(0))([""], "cpu")  # SD 1.x encodes "" as text
    assert sd.keys() == {"encoder_hidden_states"} and torch.count_nonzero(sd["encoder_hidden_states"]) > 0

    folder = tmp_path / "wide"
    folder.mkdir()
    Image.new("RGB", (80, 64), (30, 30, 220)).save(folder / "wide.png")
    (folder / "data.jsonl").write_text(json.dumps({"image": "wide.png", "caption": "a wide photo"}) + "\n")

    class NoEncoder:  # general samples drop the object: only the condition's size is read
        image_size = 8

    data = MixedTrainingData(*open_streams(None, str(folder), Columns(), Columns()), NoEncoder(), 48,
                             Regularization(mix_ratio=0.0), 0, masker="border")
    sample = data[0]
    # 64 x 80 resized to 48 x 60, centre crop from column 6 (diffusers' SDXL example: crop_top_left = (top, left))
    assert sample["original_size"] == (64, 80) and sample["crop_top_left"] == (0, 6)
    unrecorded = {k: v for k, v in sample.items() if k not in ("original_size", "crop_top_left")}
    assert time_ids(collate([sample, unrecorded])).tolist() == [[64, 80, 0, 6, 48, 48], [48, 48, 0, 0, 48, 48]]


def test_sdxl_run_conditions_on_pooled_text_and_sizes_and_exports_an_xl_pipeline(reference):
    export, received = reference
    assert len(received) == 3  # one UNet call per step: 3 steps of one micro-batch
    for added in received:
        assert added["text_embeds"].shape == (2, 32)
        assert added["time_ids"].tolist() == [[64, 64, 0, 0, 48, 48]] * 2  # the photos are 64 px, trained at 48
        assert added["image_embeds"][0].shape == (2, 1, 16)
    config = ZeroFTConfig.load(export)
    assert config.backbone == "sdxl" and config.unet_tuned and config.training["steps"] == 3
    assert (export / "validation.png").is_file() and (export / "unet").is_dir()
    pipe = load_pipeline(export, device="cpu")
    assert isinstance(pipe, ZeroFTXLPipeline)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("an object on a blue background", object_image=square_photo(), num_inference_steps=2, seed=0)
    assert out.images[0].size == (48, 48)


def test_sdxl_sigkill_and_resume_end_with_the_same_weights(setup, reference, tmp_path):
    output = tmp_path / "killed"
    final = kill_and_resume(_argv(setup, output, *SDXL_RUN, "--resume", "latest"), output)
    _assert_same(_weights(final), _weights(reference[0]))  # the EMA weights, exported


def test_sdxl_two_processes_in_adapter_mode_hold_identical_weights(setup, tmp_path):
    ranks = two_ranks(_argv(setup, tmp_path / "run", "--resolution", "48", "--max_train_steps", "1", "--train",
                            "adapter"), tmp_path)
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert not {(s["stream"], s["record"]) for s in ranks[0]["seen"]} & {(s["stream"], s["record"]) for s in ranks[1]["seen"]}
    export = tmp_path / "run" / "final"
    config = ZeroFTConfig.load(export)
    assert config.backbone == "sdxl" and not config.unet_tuned and config.training["processes"] == 2
    assert not (export / "unet").exists()
    assert isinstance(load_pipeline(export, device="cpu"), ZeroFTXLPipeline)
