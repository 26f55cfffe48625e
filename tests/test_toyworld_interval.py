"""The guidance-interval evaluation (toyworld.experiments.interval): its rows, the share of steps each interval guides
on the shipped model's schedule, resuming, and the command."""

import json

import pytest

from toyworld.__main__ import main
from toyworld.experiments import interval
from zeroft import ZeroFTPipeline
from zeroft.guidance import guided_share

JUDGE = "assets/toyworld-judge/judge.safetensors"
CHECKPOINT = "assets/zeroft-toy"


def test_the_intervals_guide_the_shares_of_steps_the_docs_state():
    """On the shipped model's 20-step schedule: wide 0.85, the paper's SD-XL interval 0.75, narrow 0.5 (1.0x)."""
    pipe = ZeroFTPipeline.from_pretrained(CHECKPOINT)
    d = pipe.zeroft_config.defaults
    shares = {name: guided_share(pipe.scheduler, d.steps, d.text_guidance, d.object_guidance, value)
              for name, value in interval.INTERVALS.items()}
    assert shares == {"off": 1.0, "wide": 0.85, "paper SD-XL": 0.75, "narrow": 0.5}


def test_rows_are_scored_written_and_resumed(tmp_path, monkeypatch):
    chosen = {"off": None, "narrow": interval.INTERVALS["narrow"]}
    record = interval.run_interval(interval.Path(CHECKPOINT), interval.Path(JUDGE), tmp_path, references=1,
                                   identities=1, intervals=chosen)
    assert record["pairs"] == 8 and list(record["rows"]) == ["off", "narrow"]
    off, narrow = record["rows"]["off"], record["rows"]["narrow"]
    assert off["interval"] is None and off["cost_of_two_branch_guidance"] == 1.5
    assert narrow["interval"] == [0.4, 2.5] and narrow["cost_of_two_branch_guidance"] == 1.0
    assert 0 <= narrow["identity"] <= 1 and "background_copy_se" in narrow
    assert json.loads((tmp_path / interval.RESULTS).read_text()) == record
    table = (tmp_path / "table.md").read_text()
    assert "| narrow | (0.4, 2.5] | 0.50 | 1.00× |" in table and "±" in table
    # a second run scores nothing again
    monkeypatch.setattr(interval, "generate", lambda *args, **kwargs: pytest.fail("a scored row was scored again"))
    assert interval.run_interval(interval.Path(CHECKPOINT), interval.Path(JUDGE), tmp_path, references=1,
                                 identities=1, intervals=chosen)["rows"] == record["rows"]


def test_within_one_standard_error_is_judged_against_full_guidance():
    off = {"identity": 0.6, "identity_se": 0.03}
    assert interval.within_one_se({"identity": 0.58}, off, "identity")
    assert not interval.within_one_se({"identity": 0.56}, off, "identity")


def test_the_command_refuses_bad_counts(capsys):
    assert main(["interval", "--identities", "0"]) == 2
    assert "--identities must be at least 1" in capsys.readouterr().err
