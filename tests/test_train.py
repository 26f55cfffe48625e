"""train.train end to end: export, what is trained, loss, kill/resume equivalence, safe saves, 2 processes.

Some runs go through the command line (``main(argv)``), others through ``run(TrainConfig(...))``: both
are what callers use.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train.checkpointing import list_checkpoints
from train.config import TrainConfig
from train.train import main, run
from zeroft import InputError, ZeroFTConfig, ZeroFTPipeline

from conftest import square_photo
from train.tiny_data import write_domain_imagefolder, write_general_jsonl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("train")
    return {
        "base": tiny_checkpoint / "base",
        "encoder": tiny_checkpoint / "encoder",
        "domain": write_domain_imagefolder(root / "domain"),
        "general": write_general_jsonl(root / "general"),
        "root": root,
    }


def _argv(setup, output, *extra, steps=2):
    return [
        "--base_model", str(setup["base"]), "--encoder", str(setup["encoder"]),
        "--domain_data", str(setup["domain"]), "--general_data", str(setup["general"]),
        "--resolution", "64", "--train_batch_size", "2", "--max_train_steps", str(steps),
        "--learning_rate", "1e-3", "--lr_warmup_steps", "0", "--checkpointing_steps", "2",
        "--output_dir", str(output), "--masker", "border", "--report_to", "none", *extra,
    ]


def _config(setup, output, steps=2, **overrides) -> TrainConfig:
    """The TrainConfig of ``_argv(setup, output, steps=steps)``, with ``overrides``."""
    settings = dict(
        base_model=setup["base"], encoder=setup["encoder"], domain_data=setup["domain"], general_data=setup["general"],
        resolution=64, train_batch_size=2, max_train_steps=steps, learning_rate=1e-3, lr_warmup_steps=0,
        checkpointing_steps=2, output_dir=output, masker="border", report_to="none",
    )
    return TrainConfig(**{**settings, **overrides})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = dict(load_file(str(folder / "adapter.safetensors")))
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if unet.is_file():
        weights.update({f"unet.{k}": v for k, v in load_file(str(unet)).items()})
    lora = folder / "pytorch_lora_weights.safetensors"  # FLUX's --train lora
    if lora.is_file():
        weights.update({f"lora.{k}": v for k, v in load_file(str(lora)).items()})
    return weights


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_end_to_end_export_generates(setup, tmp_path):
    photo = tmp_path / "ref.png"
    square_photo().save(photo)
    export = run(_config(setup, tmp_path / "run", validation_images=[photo],
                         validation_prompts=["an object on a gray background"], validation_inference_steps=2,
                         report_to="tensorboard"))
    config = ZeroFTConfig.load(export)
    assert config.unet_tuned and config.training["mix_ratio_r"] == 0.3 and config.training["steps"] == 2
    assert (export / "validation.png").is_file() and "validation.png" in (export / "README.md").read_text()
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents*"))
    pipe = ZeroFTPipeline.from_pretrained(export, device="cpu")
    out = pipe("an object on a blue background", object_image=square_photo(), num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    # plain diffusers reads the exported adapter too
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    stock = StableDiffusionPipeline.from_pretrained(export / "base", unet=UNet2DConditionModel.from_pretrained(export / "unet"),
                                                    safety_checker=None, requires_safety_checker=False)
    stock.load_ip_adapter(str(export), subfolder="", weight_name="adapter.safetensors", image_encoder_folder=None)


def test_adapter_mode_keeps_the_unet_and_whole_mode_changes_it(setup, tmp_path):
    base_unet = load_file(str(setup["base"] / "unet" / "diffusion_pytorch_model.safetensors"))
    photo = tmp_path / "photo.png"
    square_photo().save(photo)
    # EMA + validation track only the trainable (adapter) parameters in this mode
    adapter_run = main(_argv(setup, tmp_path / "a", "--train", "adapter", "--use_ema", "--validation_images", str(photo),
                             "--validation_prompts", "an object", "--validation_steps", "2",
                             "--validation_inference_steps", "1"))
    assert (tmp_path / "a" / "validation" / "step-000002.png").is_file()
    assert not (adapter_run / "unet").exists()
    reloaded = ZeroFTPipeline.from_pretrained(adapter_run, device="cpu")
    state = {k: v for k, v in reloaded.unet.state_dict().items() if ".processor." not in k and "encoder_hid_proj" not in k}
    _assert_same(state, base_unet)
    initial_adapter = load_file(str(setup["base"].parent / "adapter.safetensors"))
    trained_adapter = load_file(str(adapter_run / "adapter.safetensors"))
    assert any(not torch.equal(initial_adapter[k], trained_adapter[k]) for k in trained_adapter)

    whole_run = main(_argv(setup, tmp_path / "w", "--train", "whole"))
    tuned = load_file(str(whole_run / "unet" / "diffusion_pytorch_model.safetensors"))
    assert tuned.keys() == base_unet.keys()
    assert any(not torch.equal(tuned[k], base_unet[k]) for k in tuned)


def _eval_loss(folder: Path, setup) -> float:
    """Denoising loss of an exported checkpoint on fixed samples, fixed noise and timesteps."""
    from diffusers import DDPMScheduler

    from train.data import MixedTrainingData, Regularization, open_streams
    from train.losses import diffusion_loss, encode_latents
    from train.sources import Columns

    pipe = ZeroFTPipeline.from_pretrained(folder, device="cpu")
    streams = open_streams(str(setup["domain"]), str(setup["general"]), Columns(), Columns())
    data = MixedTrainingData(*streams, pipe.object_encoder, 64, Regularization(drop_text=0, drop_object=0, drop_both=0), 0,
                             masker="border")
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    losses = []
    with torch.no_grad():
        for g in range(8):
            sample = data[g]
            generator = torch.Generator().manual_seed(g)
            latents = encode_latents(pipe.vae, sample["pixel_values"][None], generator)
            text = pipe.encode_prompt(sample["caption"], "cpu", 1, False)[0]
            embeds = pipe.object_encoder(sample["condition"][None]) if sample["use_object"] else torch.zeros(1, 16)
            losses.append(diffusion_loss(pipe.unet, noise_scheduler, latents, text, embeds, generator).item())
    return sum(losses) / len(losses)


def test_loss_decreases_on_a_tiny_overfit_run(setup, tmp_path):
    before = run(_config(setup, tmp_path / "zero", learning_rate=1e-12, steps=1))
    after = run(_config(setup, tmp_path / "fit", steps=15))  # 15 steps: 0.24x the untrained loss (40: 0.08x)
    assert _eval_loss(after, setup) < 0.7 * _eval_loss(before, setup)


def _run(argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "train.train", *argv], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def kill_and_resume(argv: list[str], output: Path) -> Path:
    """Run ``python -m train.train argv`` (which must say ``--resume latest``), SIGKILL it once it has saved a training
    state, run it again to the end; the exported folder. Used by every backbone's kill -9 test."""
    process = _run(argv)
    deadline = time.time() + 240
    while not list_checkpoints(output) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # at whatever point step 2+ has reached
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert list_checkpoints(output), "the run should have saved a checkpoint before the kill"
    assert not (output / "final").exists()
    resumed = _run(argv)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    return output / "final"


def test_sigkill_and_resume_end_with_the_same_weights(setup, tmp_path):
    steps = ["--max_train_steps", "4", "--checkpointing_steps", "2"]
    reference = main(_argv(setup, tmp_path / "straight", *steps))
    output = tmp_path / "killed"
    _assert_same(_weights(kill_and_resume(_argv(setup, output, *steps, "--resume", "latest"), output)),
                 _weights(reference))


KILL_DURING_SAVE = """
import os, signal, sys
from pathlib import Path
import accelerate
from train.train import main

original = accelerate.Accelerator.save_state
def save_state(self, output_dir=None, **kwargs):
    result = original(self, output_dir, **kwargs)
    if Path(output_dir).name == ".tmp-checkpoint-4":
        os.kill(os.getpid(), signal.SIGKILL)  # the state is written, the rename has not happened
    return result
accelerate.Accelerator.save_state = save_state
main(sys.argv[1:])
"""


def test_a_kill_during_a_save_keeps_the_previous_checkpoint(setup, tmp_path):
    output = tmp_path / "run"
    argv = _argv(setup, output, "--max_train_steps", "6", "--checkpointing_steps", "2")
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *argv], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert [step for step, _ in list_checkpoints(output)] == [2]  # the half-done save is not taken for a checkpoint
    assert (output / ".tmp-checkpoint-4").exists()
    assert load_file(str(output / "checkpoint-2" / "model.safetensors"))  # intact and readable
    finished = main(argv + ["--resume", "latest"])
    assert not (output / ".tmp-checkpoint-4").exists()
    assert [step for step, _ in list_checkpoints(output)] == [2, 4, 6]
    assert ZeroFTConfig.load(finished).training["steps"] == 6
    # Resuming a state past --max_train_steps would export later weights labelled with fewer steps: refused.
    with pytest.raises(InputError, match="past --max_train_steps 4"):
        run(_config(setup, output, steps=4, resume="latest"))


TWO_RANKS = """
import hashlib, json, os, sys
import torch
import train.train as trainer

seen, handle = [], {}
original = trainer.training_step
def training_step(models, unet, batch, *args):
    handle["unet"] = unet
    seen.extend({"stream": s, "record": r} for s, r in zip(batch["stream"], batch["record"]))
    return original(models, unet, batch, *args)
trainer.training_step = training_step
out = sys.argv[1]
trainer.main(sys.argv[2:])
digest = hashlib.sha256()
for name, tensor in sorted(handle["unet"].state_dict().items()):
    digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
rank = int(os.environ["RANK"])
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"seen": seen, "weights": digest.hexdigest()}, f)
"""


def two_ranks(argv: list[str], folder: Path) -> list[dict]:
    """``python -m train.train argv`` as two processes (torch.distributed.run, gloo); each rank's record of what it
    saw and a digest of its weights (TWO_RANKS). Used by every backbone's two-process test."""
    script = folder / "two_ranks.py"
    script.write_text(TWO_RANKS)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(folder), *argv],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_processes_hold_identical_weights_and_see_disjoint_data(setup, tmp_path):
    ranks = two_ranks(_argv(setup, tmp_path / "run", "--max_train_steps", "2"), tmp_path)
    assert ranks[0]["weights"] == ranks[1]["weights"]
    records = [{(s["stream"], s["record"]) for s in rank["seen"]} for rank in ranks]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 4
    assert not records[0] & records[1]
    config = ZeroFTConfig.load(tmp_path / "run" / "final")
    assert config.training["processes"] == 2 and config.training["batch_size"] == 4


def test_a_resumed_ema_sits_beside_the_model(tmp_path):
    """accelerate restores a registered EMA onto the CPU; on a GPU the next EMA step then met CPU tensors
    (found on an H200: resuming a toy build's zeroft stage failed at its first step). The restore moves it back."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from train.checkpointing import load_training_state, save_training_state

    model = torch.nn.Linear(3, 2)
    ema = EMAModel(model.parameters(), decay=0.9)
    accelerator = Accelerator(cpu=True)
    accelerator.register_for_checkpointing(ema)
    for shadow in ema.shadow_params:
        shadow.data.fill_(7.0)
    folder = save_training_state(accelerator, tmp_path, 3, None)
    for shadow in ema.shadow_params:
        shadow.data.fill_(0.0)
    assert load_training_state(accelerator, folder, ema) == 3
    assert all(torch.equal(shadow, torch.full_like(shadow, 7.0)) for shadow in ema.shadow_params)

    class ModelElsewhere:  # the GPU's stand-in: the state loads as accelerate loads it, the model lives on "meta"
        device = torch.device("meta")

        @staticmethod
        def load_state(path):
            accelerator.load_state(path)

    load_training_state(ModelElsewhere(), folder, ema)
    assert [shadow.device.type for shadow in ema.shadow_params] == ["meta", "meta"]
