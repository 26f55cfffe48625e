"""Every project command takes its long options in both spellings (zeroft.flags): --num-images and --num_images."""

import pytest

from zeroft.flags import ArgumentParser, other_spelling


def test_other_spelling():
    assert other_spelling("--num-images") == "--num_images" and other_spelling("--train_batch_size") == "--train-batch-size"
    assert other_spelling("--seed") == "--seed" and other_spelling("--no-mask_condition") == "--no-mask_condition"


def test_a_parser_takes_either_spelling_and_leaves_values_and_the_rest_alone():
    parser = ArgumentParser(prog="demo")
    parser.add_argument("--num-images", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args(["--num_images=3", "--batch-size", "4", "--", "--num_images"])
    assert (args.num_images, args.batch_size, args.rest) == (3, 4, ["--num_images"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--num-imgs", "3"])


@pytest.mark.parametrize("parse, argv, field, value", [
    ("zeroft.cli", ["generate", "--image", "x.png", "--prompt", "p", "--out", "o", "--num_images", "3"], "num_images", 3),
    ("zeroft.eval", ["dreambench", "--data", "d", "--checkpoint", "c", "--out", "o", "--text_guidance", "4"],
     "text_guidance", 4.0),
    ("train.args", ["--base_model", "b", "--output-dir", "o", "--general-data", "g", "--mix-ratio", "0", "--train-batch-size", "5"],
     "train_batch_size", 5),
    ("train.prepare", ["--input", "i", "--output", "o", "--batch-size", "6"], "batch_size", 6),
    ("toyworld.__main__", ["eval", "--defaults_from", "d"], "defaults_from", "d"),
    ("webapp.launch", ["--time_budget", "30"], "time_budget", 30.0),
])
def test_every_command_takes_both_spellings(parse, argv, field, value):
    import importlib

    module = importlib.import_module(parse)
    parse_args = getattr(module, "parse_args", None) or module.build_parser().parse_args
    assert getattr(parse_args(argv), field) == value
