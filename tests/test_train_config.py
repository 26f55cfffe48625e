"""TrainConfig, the flags that fill it, the record it leaves in a checkpoint, and the generated flag table.

No training here: tests/test_train.py trains through both ``run(TrainConfig(...))`` and ``main(argv)``.
"""

import json
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch

from train.args import REGULARIZATION_FLAGS, build_parser, parse_args
from train.config import TrainConfig, default_of
from train.data import Regularization
from train.export import training_record
from train.flag_table import BEGIN, END, flag_table, replace_region
from train.flag_table import main as flag_table_main
from train.train import build_optimizer, main
from zeroft import InputError, ZeroFTConfig
from zeroft.model_card import render_model_card

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ["--base_model", "base", "--output_dir", "runs/x", "--domain_data", "domain", "--general_data", "general"]
REQUIRED_FIELDS = dict(base_model="base", output_dir="runs/x", domain_data="domain", general_data="general")

# Every default as the argparse-only train/args.py had it before TrainConfig (commit c15a994): the move
# to one definition in the dataclasses must not change any.
DEFAULTS_BEFORE = {
    "encoder": "ViT-H-14", "encoder_pretrained": "laion2b_s32b_b79k", "background_fill": "gray",
    "encoder_views": "none", "crop_to_object": True, "num_tokens": 4, "projection": "linear", "resampler_width": 768,
    "init_checkpoint": None,
    "prediction_type": None, "weighting_scheme": "none", "lora_rank": 16, "domain_data": None, "general_data": None, "split": "train", "domain_image_column": "image",
    "domain_caption_column": "caption", "general_image_column": "image", "general_caption_column": "caption",
    "domain_identity_column": "identity", "domain_mask_column": "mask", "resolution": 512,
    "masker": "rembg:u2net", "dataloader_num_workers": 0, "mix_ratio": 0.3, "cross_reference": 0.5,
    "drop_general_object": True, "drop_text": 0.05, "drop_object": 0.05, "drop_both": 0.05,
    "mask_condition": True, "train": "whole", "train_batch_size": 8, "gradient_accumulation_steps": 1,
    "max_train_steps": 10000, "learning_rate": 1e-05, "lr_scheduler": "constant_with_warmup",
    "lr_warmup_steps": 500, "adam_weight_decay": 0.01, "max_grad_norm": 1.0, "mixed_precision": "no",
    "cpu": False, "gradient_checkpointing": False, "cache_latents": False, "use_8bit_adam": False, "use_ema": False,
    "ema_decay": 0.999, "seed": 0, "export_dir": None, "checkpointing_steps": 500,
    "checkpoints_total_limit": 3, "resume": None, "report_to": "tensorboard", "log_every": 10,
    "validation_images": (), "validation_prompts": (), "validation_steps": 0,
    "validation_inference_steps": 25, "validation_text_guidance": 5.0, "validation_object_guidance": 3.0,
    "push_to_hub": None, "hub_token": None,
}


def _flags():
    return [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]


def _value(config: TrainConfig, name: str):
    return getattr(config.regularization if name in REGULARIZATION_FLAGS else config, name)


def test_every_flag_is_a_field_and_every_field_a_flag():
    settings = {f.name for f in fields(TrainConfig) if f.name != "regularization"}
    settings |= {f.name for f in fields(Regularization)}
    assert {a.dest for a in _flags()} == settings
    assert set(REGULARIZATION_FLAGS) == {a.dest for a in _flags() if a.container.title.startswith("the paper's")}


def test_flag_defaults_are_the_config_defaults_and_unchanged():
    parsed, direct = parse_args(REQUIRED), TrainConfig(**REQUIRED_FIELDS)
    assert parsed == direct
    for action in _flags():
        if action.required:
            with pytest.raises(KeyError, match="required"):
                default_of(action.dest)
            continue
        default = tuple(action.default) if isinstance(action.default, list) else action.default
        assert default == default_of(action.dest) == DEFAULTS_BEFORE[action.dest], action.dest
        if action.dest not in REQUIRED_FIELDS:
            assert _value(direct, action.dest) == default, action.dest
    assert {a.dest for a in _flags() if not a.required} == set(DEFAULTS_BEFORE)


def test_the_command_line_and_the_dataclass_give_the_same_config(tmp_path):
    argv = [
        "--base_model", "base", "--output_dir", str(tmp_path), "--domain_data", "domain",
        "--encoder", "ViT-B-32", "--no-crop_to_object", "--encoder_views", "rot4", "--background_fill", "white",
        "--num_tokens", "8", "--prediction_type", "v_prediction", "--domain_mask_column", "matte",
        "--general_caption_column", "text", "--resolution", "64", "--masker", "border",
        "--mix_ratio", "1", "--cross_reference", "0", "--no-drop_general_object", "--drop_both", "0.1",
        "--no-mask_condition", "--train", "adapter", "--learning_rate", "1e-3", "--lr_scheduler", "cosine",
        "--use_ema", "--ema_decay", "0.99", "--seed", "7", "--resume", "latest", "--report_to", "none",
        "--validation_images", "a.png", "b.png", "--validation_prompts", "on a beach",
        "--validation_object_guidance", "2.5", "--push_to_hub", "me/model",
    ]
    direct = TrainConfig(
        base_model="base", output_dir=str(tmp_path), domain_data="domain", encoder="ViT-B-32",
        crop_to_object=False, encoder_views="rot4", background_fill="white", num_tokens=8,
        prediction_type="v_prediction", domain_mask_column="matte", general_caption_column="text", resolution=64,
        masker="border", regularization=Regularization(mix_ratio=1.0, cross_reference=0.0, drop_general_object=False,
                                                       drop_both=0.1, mask_condition=False),
        train="adapter", learning_rate=1e-3, lr_scheduler="cosine", use_ema=True, ema_decay=0.99, seed=7,
        resume="latest", report_to="none", validation_images=["a.png", "b.png"], validation_prompts=["on a beach"],
        validation_object_guidance=2.5, push_to_hub="me/model",
    )
    assert parse_args(argv) == direct
    assert direct.validation_images == ("a.png", "b.png")  # lists become tuples: the config stays immutable
    assert replace(direct, seed=8) != direct
    columns = direct.columns()
    assert columns[0].mask == "matte" and columns[1].caption == "text" and columns[0].identity == "identity"


@pytest.mark.parametrize("argv, message", [
    (["--mix_ratio", "1.5"], "mix_ratio is a probability"),
    (["--drop_text", "0.5", "--drop_object", "0.6"], "must not exceed 1"),
    (["--resolution", "0"], "resolution must be at least 8"),
    (["--checkpointing_steps", "0"], "checkpointing_steps must be at least 1"),
    (["--learning_rate", "0"], "learning_rate must be above 0"),
    (["--ema_decay", "1.5"], "ema_decay must be between 0 and 1"),
    (["--lr_scheduler", "warm"], "lr_scheduler must be one of linear, .*constant_with_warmup"),
    (["--masker", "magic"], "unknown masker 'magic'"),
    (["--validation_text_guidance", "50"], "validation_text_guidance must be between 0 and 30"),
    (["--validation_inference_steps", "0"], "steps must be between 1 and 150"),
    (["--use_8bit_adam", "--cpu"], "use_8bit_adam needs bitsandbytes on a CUDA GPU"),
])
def test_bad_flag_values_raise_input_error(argv, message):
    with pytest.raises(InputError, match=message):
        parse_args(REQUIRED + argv)


@pytest.mark.parametrize("changes, message", [
    (dict(domain_data=None, general_data=None), "Give domain_data and/or general_data"),
    (dict(domain_data=None), "mix_ratio 0.3 draws domain-specific samples, but no domain_data"),
    (dict(general_data=None), "mix_ratio 0.3 draws general-domain samples, but no general_data"),
    (dict(background_fill="pink"), "background_fill must be one of gray, white, black, none"),
    (dict(encoder_views="rot8"), "encoder_views must be one of none, flip, rot4, dihedral"),
    (dict(num_tokens=2.5), "num_tokens must be a whole number"),
    (dict(train_batch_size=True), "train_batch_size must be a whole number"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm must be a finite number"),
    (dict(output_dir=""), "output_dir must not be empty"),
    (dict(regularization={"mix_ratio": 0.3}), "regularization must be a train.data.Regularization"),
])
def test_bad_config_values_raise_input_error(changes, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**{**REQUIRED_FIELDS, **changes})


def test_only_the_command_line_layer_turns_an_input_error_into_exit_status_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--base_model", "base", "--output_dir", "runs/x"])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: Give domain_data and/or general_data (--domain_data, --general_data): "
                     "training needs at least one dataset."]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_8bit_adam_without_cuda_raises_input_error():
    config = TrainConfig(**REQUIRED_FIELDS, use_8bit_adam=True)
    with pytest.raises(InputError, match="--use_8bit_adam needs bitsandbytes on a CUDA GPU; this machine has none"):
        build_optimizer(config, [torch.nn.Parameter(torch.zeros(2))])


def test_the_record_keeps_the_keys_readers_use_and_never_the_token(tmp_path):
    config = TrainConfig(base_model=tmp_path / "base", output_dir=tmp_path / "run", domain_data=tmp_path / "d",
                         general_data="general", init_checkpoint=tmp_path / "init", validation_images=[tmp_path / "a.png"],
                         hub_token="hf_secret", push_to_hub="me/model", train_batch_size=4,
                         gradient_accumulation_steps=3, max_train_steps=6)
    record = training_record(config, processes=2, throughput=12.34567, seconds=9.87, grid=tmp_path / "step.png")
    assert json.loads(json.dumps(record)) == record  # JSON values only: paths are strings
    assert record["mix_ratio_r"] == 0.3 and record["cross_reference_omega"] == 0.5 and record["drop_general_object"]
    assert record["steps"] == 6 and record["trained"] == "whole" and record["ema"] is False
    assert record["batch_size"] == 4 * 3 * 2 and record["processes"] == 2
    assert record["samples_per_second"] == 12.346 and record["train_seconds_last_session"] == 9.9
    assert record["validation_grid"] == "validation.png" and record["init_checkpoint"] == str(tmp_path / "init")
    assert record["domain_data"] == str(tmp_path / "d") and record["recipe"].startswith("Jia et al. 2023")
    assert "hf_secret" not in json.dumps(record) and "hub_token" not in record and "output_dir" not in record
    assert "validation_grid" not in training_record(config, 1, 1.0, 1.0, grid=None)
    as_strings = replace(config, base_model=str(config.base_model), domain_data=str(config.domain_data),
                         init_checkpoint=str(config.init_checkpoint), validation_images=[str(tmp_path / "a.png")])
    assert as_strings.summary() == config.summary()


def test_the_model_card_shows_the_validation_grid_only_when_recorded():
    with_grid = render_model_card(ZeroFTConfig(base_model="base", training={"validation_grid": "validation.png"}))
    assert with_grid.count("## Validation grid") == 1 and "![validation grid](validation.png)" in with_grid
    assert "Row i: reference photo i, then one image per validation prompt." in with_grid
    assert "Validation grid" not in render_model_card(ZeroFTConfig(base_model="base", training={"steps": 2}))


def test_docs_flag_table_matches_the_parser():
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert replace_region(text, flag_table()) == text, \
        "docs/training.md's flag table is stale: run python -m train.flag_table --write docs/training.md"


def test_the_flag_table_lists_every_flag_under_its_group():
    table = flag_table()
    for action in _flags():
        assert all(f"`{option}`" in table for option in action.option_strings), action.dest
    titles = ["*models*", "*data*", "*the paper's regularizers (sec. 3.4)*", "*optimisation*", "*run*"]
    assert [table.index(title) for title in titles] == sorted(table.index(title) for title in titles)
    assert table.index("`--drop_text`") > table.index(titles[2]) > table.index("`--masker`")
    assert ("| `--base_model` | required | diffusers Stable Diffusion 1.x or SDXL pipeline, local folder or Hub id "
            "(the family is read from its model_index.json) |") in table
    assert ("| `--background_fill` | gray | colour replacing the masked-out background of the condition photo "
            "(gray, white, black, none) |") in table
    assert "| `--crop_to_object` / `--no-crop_to_object` | True |" in table
    assert "border \\| rembg:&lt;model&gt; |" in table  # a bare | would end the cell
    assert "| `--validation_images` | – |" in table and "| `--learning_rate` | 1e-05 |" in table


def test_write_rewrites_only_the_marked_region(tmp_path, capsys):
    page = tmp_path / "training.md"
    page.write_text(f"# Training\n\nintro\n\n{BEGIN}\nstale table\n{END}\n\nafter\n", encoding="utf-8")
    assert flag_table_main(["--write", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# Training\n\nintro\n\n{BEGIN}\n\n") and text.endswith(f"\n{END}\n\nafter\n")
    assert "stale table" not in text and flag_table() in text
    assert flag_table_main(["--write", str(page)]) == 0 and page.read_text(encoding="utf-8") == text
    assert "already up to date" in capsys.readouterr().err

    unmarked = tmp_path / "plain.md"
    unmarked.write_text(f"# Plain\n{END}\n{BEGIN}\n", encoding="utf-8")  # markers out of order
    assert flag_table_main(["--write", str(unmarked)]) == 2
    assert unmarked.read_text(encoding="utf-8") == f"# Plain\n{END}\n{BEGIN}\n"
    assert "lacks the marker lines" in capsys.readouterr().err
