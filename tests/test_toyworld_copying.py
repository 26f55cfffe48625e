"""The copy-failure experiment (toyworld.experiments.copying): every arm starts from the shipped model and differs from
the others only in the data recipe; a short real run trains and saves states that load; a stopped run scores each point
once."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toyworld.budget import QUICK, Budget, train_config, with_overrides
from toyworld.experiments import copying
from train.checkpointing import STATE_FILE, list_checkpoints
from zeroft import ZeroFTConfig, ZeroFTPipeline

SHIPPED = Path("assets/zeroft-toy")
JUDGE = Path("assets/toyworld-judge/judge.safetensors")
SMALL = replace(QUICK, zeroft_batch=4)  # tiny streams, 4 samples a step


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    work = tmp_path_factory.mktemp("copying")
    return work, copying.prepare_start(SHIPPED, work)


def test_the_start_is_the_shipped_model_and_its_base_loads_whole(start):
    from diffusers import StableDiffusionPipeline

    work, folder = start
    shipped = load_file(str(SHIPPED / "unet" / "diffusion_pytorch_model.safetensors"))
    copied = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert copied.keys() == shipped.keys()
    assert all(copied[k].dtype == torch.float32 and torch.equal(copied[k], shipped[k].float()) for k in shipped)
    base = StableDiffusionPipeline.from_pretrained(work / "base" / "base", safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    assert base.unet.config.cross_attention_dim == ZeroFTConfig.load(SHIPPED).cross_attention_dim


def test_the_arms_differ_only_in_the_data_recipe(start):
    """Same steps, batch, learning rate, EMA, seed, streams and trained parameters (the whole network, as shipped);
    IP-Adapter's data recipe switches off masking, cross-reference and dropping general images to the null object."""
    work, folder = start
    shipped = ZeroFTConfig.load(SHIPPED).training
    base = train_config(work, replace(Budget(), zeroft=3000, checkpoint_every=1000), 0, [], work / "arm", init=folder)
    configs = {name: with_overrides(base, overrides) for name, overrides in copying.ARMS.items()}
    recipe = {"regularization"}  # r, ω, dropping, masking: train.data.Regularization
    for name, config in configs.items():
        theirs, ours = asdict(config), asdict(base)
        assert {k for k in ours if ours[k] != theirs[k]} <= recipe, name
        assert config.train == shipped["trained"] == "whole" and config.use_ema == shipped["ema"]
        assert (config.train_batch_size, config.learning_rate) == (shipped["batch_size"], shipped["learning_rate"])
    ip_adapter = configs["ip_adapter_data"]
    assert not ip_adapter.regularization.mask_condition and ip_adapter.regularization.cross_reference == 0.0
    assert not ip_adapter.regularization.drop_general_object
    assert configs["paper_recipe"] == base and base.regularization.mask_condition and base.regularization.cross_reference == 0.5


def test_a_short_real_run_saves_states_that_load_and_moved_the_weights(start):
    work, _ = start
    folder = copying.prepare(SHIPPED, work, JUDGE.parent, SMALL, 0)
    output = copying.train_arm(work, folder, "ip_adapter_data", steps=2, score_every=1, seed=0, budget=SMALL)
    assert [step for step, _ in list_checkpoints(output)] == [1, 2]
    assert ZeroFTConfig.load(output / "final").training["steps"] == 2
    assert ZeroFTConfig.load(output / "final").training["mask_condition"] is False
    pipe = ZeroFTPipeline.from_pretrained(folder, device="cpu")
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    copying.load_training_state(pipe, list_checkpoints(output)[-1][1])
    moved = [k for k, v in pipe.unet.state_dict().items() if not torch.equal(v, before[k])]
    assert moved and any("to_k_ip" in k for k in moved) and any("down_blocks" in k and "to_k_ip" not in k for k in moved)


def test_a_stopped_run_scores_each_point_once_and_reports_them(tmp_path, monkeypatch):
    """Training stood in by saved-state folders; scoring by a recorder. A second run after a stop scores only the
    points still missing; the table has every point and the figure is drawn."""
    scored = []

    def fake_train(work, start, name, steps, score_every, seed, budget):
        output = work / copying.FOLDER / name
        for step in range(score_every, steps + 1, score_every):
            (output / f"checkpoint-{step}").mkdir(parents=True, exist_ok=True)
            (output / f"checkpoint-{step}" / STATE_FILE).write_text("{}")
        (output / "final").mkdir(parents=True, exist_ok=True)
        ZeroFTConfig.load(start).replace(training={"steps": steps, "batch_size": 4, "samples_per_second": 1.0}).save(output / "final")
        return output

    def fake_score(pipe, judge, pairs, defaults, label):
        scored.append(label)
        copy = 0.5 if label.startswith("ip_adapter_data") else 0.0
        row = {"identity": 0.5, "identity_se": 0.03, "text_on_conflicts": 1 - copy, "text_on_conflicts_se": 0.03,
               "background_copy": copy, "background_copy_se": 0.03, "position_copy": 0.3, "position_copy_se": 0.04}
        return {"masked": {**row, "identity_of_ceiling": 1.0}, "unmasked": row, "ceiling": row, "score_seconds": 0.1}

    monkeypatch.setattr(copying, "train_arm", fake_train)
    monkeypatch.setattr(copying, "score_point", fake_score)
    monkeypatch.setattr(copying, "load_training_state", lambda pipe, state: None)
    monkeypatch.setattr(copying, "write_training_streams", lambda run: None)
    work, out = tmp_path / "work", tmp_path / "out"
    run = lambda arms, steps: copying.run_copying(work, SHIPPED, JUDGE, out, arms, steps, 1000, budget=SMALL)  # noqa: E731
    run(["ip_adapter_data"], 2000)
    assert scored == ["start", "ip_adapter_data 1000", "ip_adapter_data 2000"]
    run(["paper_recipe"], 2000)  # one command per arm: the second arm is scored, the first stays in the record
    assert scored[3:] == ["paper_recipe 1000", "paper_recipe 2000"]
    run(["ip_adapter_data", "paper_recipe"], 2000)  # both done: nothing is scored again
    assert len(scored) == 5
    record = json.loads((out / copying.RESULTS).read_text())
    assert set(record["points"]) == {copying.START, "ip_adapter_data", "paper_recipe"}
    table = (out / "table.md").read_text()
    assert table.count("| start (shipped) |") == 2 and table.count("| ip adapter data | 2,000 |") == 2
    assert "| chance |" in table and "0.500 ± 0.030" in table
    assert (out / "copying.png").stat().st_size > 1000
