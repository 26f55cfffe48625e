"""``python -m toyworld``: budgets from flags, and a bad request as one error line with exit status 2."""

import pytest

from toyworld.__main__ import budget_from_args, main, parse_args
from toyworld.budget import GPU, QUICK, Budget
from zeroft.errors import InputError


def test_budget_options():
    assert budget_from_args(parse_args(["build"])) == Budget()
    assert budget_from_args(parse_args(["build", "--budget", "gpu"])) == GPU
    quick = budget_from_args(parse_args(["build", "--quick", "--unet", "attn16", "--zeroft-steps", "7"]))
    assert (quick.unet, quick.zeroft, quick.base) == ("attn16", 7, QUICK.base)
    with pytest.raises(InputError, match="at least 1"):
        budget_from_args(parse_args(["build", "--zeroft-steps", "0"]))
    stages = budget_from_args(parse_args(["build", "--unet", "lat32", "--vae-steps", "3000", "--base-steps", "2000"]))
    assert (stages.unet, stages.vae, stages.base, stages.zeroft, stages.encoder) == ("lat32", 3000, 2000, 26000, 2500)
    with pytest.raises(InputError, match="--base-steps must be at least 1"):
        budget_from_args(parse_args(["build", "--base-steps", "-2"]))
    with pytest.raises(SystemExit):
        parse_args(["build", "--budget", "tpu"])


def test_a_bad_request_is_one_error_line_and_exit_status_2(tmp_path, capsys):
    assert main(["build", "--zeroft-steps", "0", "--work", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == "error: --zeroft-steps must be at least 1, got 0\n"
    assert main(["patterns", "--work", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err.startswith(f"error: No base model at {tmp_path / 'w' / 'base' / 'base'}")
    assert main(["recipes", "--steps", "0", "--work", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == "error: --steps must be at least 1, got 0\n"
    assert main(["recipes", "--checkpoint", str(tmp_path / "none"), "--work", str(tmp_path / "w")]) == 2
    assert "no zeroft checkpoint there" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
