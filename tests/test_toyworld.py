"""The toy world: determinism, a held-out split that stays out, captions that match renderings, a smoke build."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from train.toyworld.scenes import Scenes, write_streams
from train.toyworld.world import (BACKGROUNDS, COLOURS, PATTERNS, SHAPES, Context, all_contexts, all_identities,
                                  context_caption, general_caption, random_pose, render, sample_scene, split_identities)

ROOT = Path(__file__).resolve().parents[1]


def test_rendering_is_deterministic():
    identities = all_identities()
    a = Scenes(5, identities)[17]
    b = Scenes(5, identities)[17]
    assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) and a["caption"] == b["caption"]
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(Scenes(6, identities)[17]["image"]))


def test_held_out_split_keeps_every_attribute_in_training():
    train, held_out = split_identities()
    assert len(train) == 60 and len(held_out) == 12 and not set(train) & set(held_out)
    assert split_identities() == (train, held_out)
    for field, values in (("shape", SHAPES), ("colour", COLOURS), ("pattern", PATTERNS)):
        assert {getattr(i, field) for i in train} == set(values)


def test_held_out_identities_never_reach_the_training_streams(tmp_path):
    train, held_out = split_identities()
    write_streams(tmp_path, train, general=300, per_identity=2, seed=0)
    general = [json.loads(line) for line in (tmp_path / "general" / "data.jsonl").read_text().splitlines()]
    domain = [json.loads(line) for line in (tmp_path / "domain" / "data.jsonl").read_text().splitlines()]
    assert not {row["identity"] for row in general} & {i.name for i in held_out}
    assert {row["identity"] for row in domain} == {i.name for i in train}
    for row in domain:  # context-only captions: the identity must come from the photo
        assert not set(row["caption"].split()) & (set(COLOURS) | set(SHAPES) | set(PATTERNS))


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected regions of True."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        while stack:
            y, x = stack.pop()
            if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x] and not seen[y, x]:
                seen[y, x] = True
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return count


def _colour_fraction(image, colour, tolerance=30):
    pixels = np.asarray(image, dtype=np.int32)
    return float((np.abs(pixels - np.array(colour)).max(-1) < tolerance).mean())


@pytest.mark.parametrize("index", range(12))
def test_captions_match_renderings(index):
    rng = np.random.default_rng(index)
    identity, context, pose = sample_scene(rng, all_identities())
    image, mask = render(identity, context, pose)
    caption = general_caption(identity, context)
    assert caption.startswith(context.count) and f"on a {context.background} background" in caption
    # the background colour fills the border, the body colour is on the object
    border = np.concatenate([np.asarray(image)[0], np.asarray(image)[-1]])
    assert np.abs(np.median(border, 0) - np.array(BACKGROUNDS[context.background])).max() < 10
    assert _colour_fraction(image, COLOURS[identity.colour]) > 0.01
    # as many separate objects as the caption says
    assert _components(np.asarray(mask) > 127) == {"one": 1, "two": 2}[context.count]


def test_patterns_are_visible():
    context = Context("gray", "one")
    pose = random_pose(np.random.default_rng(0), "one")
    plain, _ = render(all_identities()[0].__class__("square", "red", "plain"), context, pose)
    striped, _ = render(all_identities()[0].__class__("square", "red", "striped"), context, pose)
    dark = tuple(int(v * 0.4) for v in COLOURS["red"])
    assert _colour_fraction(plain, dark, 20) < 0.005 < _colour_fraction(striped, dark, 20)


def test_border_masker_recovers_the_silhouette_on_dark_backgrounds():
    """The pipeline's automatic mask of a reference matches the true silhouette: dark stripes
    and dots on a black or brown background stay inside the object (training used true masks)."""
    from zeroft import Masker

    masker, rng = Masker("border"), np.random.default_rng(3)
    for identity in all_identities():
        if identity.pattern == "plain":
            continue
        for background in ("black", "brown"):
            image, mask = render(identity, Context(background, "one"), random_pose(rng, "one"))
            truth, found = np.asarray(mask) >= 128, masker(image) >= 0.5
            assert (truth & found).sum() / (truth | found).sum() > 0.75, (identity, background)


def test_context_captions_cover_every_context():
    captions = {context_caption(c) for c in all_contexts()}
    assert len(captions) == 8 and "two objects on a white background" in captions


def test_smoke_build(tmp_path):
    """The whole recipe at a few steps per stage: every stage runs and the export loads and generates."""
    from train.toyworld.build import main
    from zeroft import ZeroFTPipeline

    argv = ["build", "--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            "--assets", str(tmp_path / "assets"), "--device", "cpu", "--workers", "1"]
    # --until zeroft trains every stage and stops before the sweeps and the export (a GPU trains, the rest later)
    report = main(argv + ["--until", "zeroft"])
    assert set(report["stages"]) == {"vae", "encoder", "judge", "base", "zeroft"}
    assert not (tmp_path / "out").exists() and "guidance_sweep_on_training_identities" not in report
    report = main(argv)  # picks up the trained stages: sweeps and export only
    assert set(report["stages"]) == {"vae", "encoder", "judge", "base", "zeroft"}
    assert report["stages"]["zeroft"]["wall_seconds_this_run"] < 60 and report["guidance_sweep_on_training_identities"]
    assert (report["device"], report["workers"]) == ("cpu", 1)
    assert report["checkpoint_bytes"] < 25 * 2**20
    pipe = ZeroFTPipeline.from_pretrained(tmp_path / "out", device="cpu")
    examples = json.loads((tmp_path / "assets" / "examples" / "examples.json").read_text())
    out = pipe(examples[0]["prompt"], object_image=tmp_path / "assets" / "examples" / examples[0]["image"],
               num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    assert (tmp_path / "assets" / "toyworld-judge" / "judge.safetensors").is_file()

    # The pattern diagnostic runs on the build: one confusion matrix per source and split, over every pair.
    from bench.toyworld_patterns import main as patterns

    result = patterns(["--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--steps", "2",
                       "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"),
                       "--out", str(tmp_path / "patterns")])
    for split in ("held-out", "training"):
        rows = result["results"][split]
        for source in ("base, full caption", "zeroft, full caption", "zeroft, object photo"):
            assert sum(map(sum, rows[source]["matrix"])) == rows["pairs"] > 0
            assert 0.0 <= rows[source]["accuracy"] <= 1.0
    assert json.loads((tmp_path / "patterns" / "patterns.json").read_text())["results"] == result["results"]

    # The evaluation runs on the build: every row over its pairs, the fine-tuning baseline timed, curve and grid drawn.
    from bench.toyworld_eval import main as evaluation

    evaluation(["--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "eval"),
                "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"), "--references", "1",
                "--finetune-objects", "1", "--finetune-steps", "1", "--curve", "--curve-points", "2", "--device", "cpu"])
    report = json.loads((tmp_path / "eval" / "toyworld_eval.json").read_text())
    rows = report["rows"]
    assert rows["zeroft"]["pairs"] == 96 and rows["text only (w_obj = 0)"]["pairs"] == 96
    assert rows["per-object fine-tuning (1 objects)"]["pairs"] == 8
    assert rows["per-object fine-tuning (1 objects)"]["seconds_per_object"] > 0
    assert all(0.0 <= row[m] <= 1.0 for row in rows.values() for m in ("identity", "text", "both"))
    assert report["device"] == "cpu" and 1 <= len(report["curve"]) <= 2
    assert (tmp_path / "eval" / "samples.png").is_file() and (tmp_path / "eval" / "curve.png").is_file()

    # A build stopped part way is scored at another checkpoint's defaults: its saved states only, no table rows.
    from dataclasses import replace

    from zeroft.config import ZeroFTConfig

    config = ZeroFTConfig.load(tmp_path / "out")
    (tmp_path / "defaults").mkdir()
    config.replace(defaults=replace(config.defaults, text_guidance=7.5, object_guidance=5.0, steps=1),
                   encoder=replace(config.encoder, views="rot4")).save(tmp_path / "defaults")
    curve_only = ["--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--curve-only",
                  "--curve-points", "1", "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"),
                  "--out", str(tmp_path / "curve"), "--device", "cpu"]
    report = evaluation(curve_only + ["--defaults-from", str(tmp_path / "defaults")])
    assert "rows" not in report and report["views"] == "rot4" and report["pairs"] == 96
    assert report["guidance"] == {"text": 7.5, "object": 5.0} and report["sampler_steps"] == 1
    assert len(report["curve"]) == 1 and 0.0 <= report["curve"][0]["pattern_acc"] <= 1.0
    assert json.loads((tmp_path / "curve" / "toyworld_eval.json").read_text())["curve"] == report["curve"]
    with pytest.raises(SystemExit, match="--defaults-from .*zeroft_config.json is missing"):
        evaluation(curve_only + ["--defaults-from", str(tmp_path / "nothing")])

    # A larger zeroft budget trains on from the last state instead of reusing the stale export.
    from train.toyworld.build import QUICK, build, trained_steps, zeroft_resume

    runs = tmp_path / "work" / "zeroft"
    final = runs / "final"
    assert trained_steps(final) == QUICK.zeroft
    # (defaults taken from a checkpoint: the sweeps already ran above, and cost most of this test's time)
    report = build(tmp_path / "work", tmp_path / "out", tmp_path / "assets", replace(QUICK, zeroft=QUICK.zeroft + 1),
                   defaults_from=tmp_path / "defaults")
    assert trained_steps(final) == report["stages"]["zeroft"]["steps"] == QUICK.zeroft + 1
    assert report["defaults_from"]["views"] == "rot4" and "guidance_sweep_on_training_identities" not in report
    assert trained_steps(tmp_path / "nothing") is None
    # Back to the smaller budget, the build resumes the state saved at exactly that step (train.train refuses to
    # resume a later one: tests/test_train.py); an unseen budget resumes the newest.
    assert zeroft_resume(runs, QUICK.zeroft) == str(runs / f"checkpoint-{QUICK.zeroft}")
    assert zeroft_resume(runs, QUICK.zeroft + 5) == "latest"
    # A run stopped early (a time-limited GPU): --zeroft-steps N re-exports the state saved at step N.
    report = main(argv + ["--until", "zeroft", "--zeroft-steps", "1"])
    assert trained_steps(final) == report["stages"]["zeroft"]["steps"] == 1


def test_quick_build_with_the_lat32_unet(tmp_path):
    """--unet lat32 trains its own 2×-down VAE and a base on 32×32 latents; zeroft trains and exports on them.
    (The sweeps and the fp16 export after zeroft do not depend on the variant: test_smoke_build runs them.)"""
    from train.toyworld.build import main
    from zeroft import ZeroFTPipeline

    # Only the sweeps read the judge, and its training does not depend on the variant: mark it finished to save time.
    (tmp_path / "work" / "judge").mkdir(parents=True)
    (tmp_path / "work" / "judge" / "done.json").write_text(json.dumps({"steps": 3, "seconds": 0.0}))
    report = main(["build", "--quick", "--unet", "lat32", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                   "--assets", str(tmp_path / "assets"), "--device", "cpu", "--workers", "0", "--until", "zeroft"])
    assert report["stages"]["vae"]["latent_size"] == 32 and report["stages"]["base"]["unet"] == "lat32"
    pipe = ZeroFTPipeline.from_pretrained(tmp_path / "work" / "zeroft" / "final", device="cpu")
    assert pipe.unet.config.sample_size == 32 and pipe.vae.config.latent_channels == 4
    examples = json.loads((tmp_path / "assets" / "examples" / "examples.json").read_text())
    out = pipe(examples[0]["prompt"], object_image=tmp_path / "assets" / "examples" / examples[0]["image"],
               num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    # The same work folder cannot turn into a v1 build: its VAE is the wrong one.
    with pytest.raises(SystemExit, match="VAE onto 32² latents, not 16²"):
        main(["build", "--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out2"),
              "--assets", str(tmp_path / "assets"), "--device", "cpu", "--workers", "0"])


def test_prefetched_batches_are_the_inline_batches():
    """Rendering ahead in worker processes changes nothing a step sees, also from a resumed step."""
    from train.toyworld.stages import EncoderBatch, SceneBatch, prefetch

    train_ids, _ = split_identities()
    for make in (SceneBatch(Scenes(3, train_ids), 4), EncoderBatch(train_ids[:5], 3)):
        inline = list(prefetch(make, 2, 6, workers=0))
        ahead = list(prefetch(make, 2, 6, workers=2))
        assert len(inline) == len(ahead) == 4
        for a, b in zip(inline, ahead):
            key = "pixels" if "pixels" in a else "views"
            assert torch.equal(a[key], b[key])
            assert all(torch.equal(a["labels"][k], b["labels"][k]) for k in a["labels"])


def test_a_stage_trains_the_same_with_rendering_workers(tmp_path):
    from safetensors.torch import load_file

    from train.toyworld.stages import train_vae

    train_ids, _ = split_identities()
    for workers in (0, 2):
        train_vae(tmp_path / f"w{workers}", train_ids, steps=3, seed=0, workers=workers)
    first, second = (load_file(str(tmp_path / f"w{w}" / "vae" / "diffusion_pytorch_model.safetensors")) for w in (0, 2))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_device_choice():
    from train.toyworld.stages import default_workers, build_device

    assert build_device("cpu").type == "cpu"
    assert build_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_workers(torch.device("cpu")) == 0
    assert 1 <= default_workers(torch.device("cuda")) <= 8
    with pytest.raises(SystemExit, match="expected auto, cpu or cuda"):
        build_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            build_device("cuda")


@pytest.mark.gpu
def test_quick_build_on_a_gpu(tmp_path):
    from train.toyworld.build import main

    report = main(["build", "--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                   "--assets", str(tmp_path / "assets"), "--device", "cuda"])
    assert report["device"] != "cpu" and report["stages"]["zeroft"]["steps"] > 0


def test_streams_written_by_worker_processes_are_the_same_files(tmp_path):
    train, _ = split_identities()
    write_streams(tmp_path / "inline", train, general=40, per_identity=1, seed=3)
    write_streams(tmp_path / "pool", train, general=40, per_identity=1, seed=3, workers=2)
    inline = sorted(p.relative_to(tmp_path / "inline") for p in (tmp_path / "inline").rglob("*") if p.is_file())
    pooled = sorted(p.relative_to(tmp_path / "pool") for p in (tmp_path / "pool").rglob("*") if p.is_file())
    assert inline == pooled and len(inline) == 40 + 2 * len(train) + 2
    for name in inline:
        assert (tmp_path / "inline" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes(), name


def test_unet_variants():
    from train.toyworld.models import make_unet

    v1, attn16 = make_unet(0), make_unet(0, "attn16")
    assert not hasattr(v1.down_blocks[0], "attentions") and len(attn16.down_blocks[0].attentions) == 1
    assert len(attn16.up_blocks[-1].attentions) == 2  # the 16×16 level, on the way up too
    assert v1.config.block_out_channels == attn16.config.block_out_channels
    with pytest.raises(SystemExit, match="unknown UNet variant 'big'"):
        make_unet(0, "big")


def test_the_lat32_unet_works_on_the_2x_down_vae():
    """lat32: a 32×32×4 latent grid from a VAE with one downsampling, under v1's levels; v1 keeps its 16×16×8."""
    from train.toyworld.models import latent_size, make_unet, make_vae

    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    for variant, shape in (("v1", (2, 8, 16, 16)), ("lat32", (2, 4, 32, 32))):
        vae, unet = make_vae(0, latent_size(variant)), make_unet(0, variant)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mean
            assert latents.shape == shape and vae.decode(latents).sample.shape == pixels.shape
            out = unet(latents, torch.tensor([10, 500]), torch.randn(2, 16, 64)).sample
        assert out.shape == shape and unet.config.sample_size == shape[-1]
    assert make_unet(0, "lat32").config.block_out_channels == (32, 64, 128, 128)
    with pytest.raises(SystemExit, match="unknown latent size 8"):
        make_vae(0, 8)


def test_a_vae_of_another_latent_size_is_not_reused(tmp_path):
    from train.toyworld.stages import Stage, train_vae

    train, _ = split_identities()
    (tmp_path / "done.json").write_text(json.dumps({"steps": 3, "seconds": 1.0}))  # older builds: 16×16, unsaid
    assert train_vae(tmp_path, train, 3, 0)["steps"] == 3
    with pytest.raises(SystemExit, match="VAE onto 16² latents, not 32²"):
        train_vae(tmp_path, train, 3, 0, latent_size=32)
    # A half-trained 32² VAE, resumed as 16²: a plain message naming the clash.
    from train.toyworld.models import make_vae

    (tmp_path / "done.json").unlink()
    vae = make_vae(0, 32)
    stage = Stage(tmp_path, {"vae": vae}, torch.optim.AdamW(vae.parameters()), 3, config={"latent_size": 32})
    stage.maybe_save(force=True)
    with pytest.raises(SystemExit, match="latent_size 32, not 16"):
        train_vae(tmp_path, train, 3, 0)


def test_a_base_built_with_another_unet_is_not_reused(tmp_path):
    from train.toyworld.models import make_vae
    from train.toyworld.stages import train_base

    (tmp_path / "done.json").write_text(json.dumps({"steps": 3, "seconds": 1.0}))  # a v1 base (older builds say nothing)
    train, _ = split_identities()
    assert train_base(tmp_path, train, make_vae(0), 3, 0)["steps"] == 3
    with pytest.raises(SystemExit, match="'v1' UNet, not 'attn16'"):
        train_base(tmp_path, train, make_vae(0), 3, 0, unet_variant="attn16")


def test_a_half_trained_base_of_another_unet_is_a_clear_error(tmp_path):
    """A killed attn16 base stage, resumed as v1 (or the other way round): a plain message, not a shape traceback."""
    from diffusers.training_utils import EMAModel

    from train.toyworld.models import make_text_encoder, make_unet, make_vae
    from train.toyworld.stages import Stage, train_base

    unet, text_encoder = make_unet(0, "attn16"), make_text_encoder(0)
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    stage = Stage(tmp_path, {"unet": unet, "text_encoder": text_encoder, "ema": EMAModel(parameters)},
                  torch.optim.AdamW(parameters), 10, config={"unet": "attn16"})
    stage.step = 4
    stage.maybe_save(force=True)
    train, _ = split_identities()
    with pytest.raises(SystemExit, match="half-trained state made with unet 'attn16', not 'v1'"):
        train_base(tmp_path, train, make_vae(0), 10, 0)
    # a state saved before the config was recorded: its weights do not fit, which says the same plainly
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    del state["config"]
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(SystemExit, match="does not fit this stage's models .*another --work folder"):
        train_base(tmp_path, train, make_vae(0), 10, 0)
    # the same variant resumes where it stopped
    unet, text_encoder = make_unet(0, "attn16"), make_text_encoder(0)
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    resumed = Stage(tmp_path, {"unet": unet, "text_encoder": text_encoder, "ema": EMAModel(parameters)},
                    torch.optim.AdamW(parameters), 10, config={"unet": "attn16"})
    assert resumed.step == 4


def test_budget_options():
    from train.toyworld.build import GPU, QUICK, Budget, budget_from_args, parse_args

    assert budget_from_args(parse_args(["build"])) == Budget()
    assert budget_from_args(parse_args(["build", "--budget", "gpu"])) == GPU
    quick = budget_from_args(parse_args(["build", "--quick", "--unet", "attn16", "--zeroft-steps", "7"]))
    assert (quick.unet, quick.zeroft, quick.base) == ("attn16", 7, QUICK.base)
    with pytest.raises(SystemExit, match="at least 1"):
        budget_from_args(parse_args(["build", "--zeroft-steps", "0"]))
    stages = budget_from_args(parse_args(["build", "--unet", "lat32", "--vae-steps", "3000", "--base-steps", "2000"]))
    assert (stages.unet, stages.vae, stages.base, stages.zeroft, stages.encoder) == ("lat32", 3000, 2000, 26000, 2500)
    with pytest.raises(SystemExit, match="--base-steps must be at least 1"):
        budget_from_args(parse_args(["build", "--base-steps", "-2"]))
    with pytest.raises(SystemExit):
        parse_args(["build", "--budget", "tpu"])


def test_ablations_only_adds_rows_and_keeps_earlier_ones(tmp_path):
    """``ablations --only X`` must not erase the rows of variants trained in earlier runs."""
    from train.toyworld.ablations import run_ablations

    folder = tmp_path / "ablations"
    folder.mkdir()
    earlier = {"recipe": {"overrides": [], "steps": 500, "checkpoint": "x", "samples_per_second": 40.0}}
    (folder / "ablations.json").write_text(json.dumps(earlier))
    final = folder / "r=1" / "final"  # already trained: the run only records it
    final.mkdir(parents=True)
    (final / "zeroft_config.json").write_text(json.dumps({"training": {"samples_per_second": 32.0, "batch_size": 32}}))
    report = run_ablations(tmp_path, steps=500, only=["r=1"])
    written = json.loads((folder / "ablations.json").read_text())
    assert set(written) == set(report) == {"recipe", "r=1"}
    assert written["recipe"] == earlier["recipe"]
    assert written["r=1"]["overrides"] == ["--mix_ratio", "1"] and written["r=1"]["train_seconds"] == 500.0


def test_step_cost_benchmark_runs():
    from bench.toyworld_steps import main

    report = main(["--device", "cpu", "--batches", "2", "--steps", "1", "--render", "4", "--unets", "v1", "attn16", "lat32"])
    assert set(report["seconds_per_step"]) == {"v1@2", "attn16@2", "lat32@2"}
    bf16 = main(["--device", "cpu", "--batches", "2", "--steps", "1", "--render", "4", "--unets", "lat32",
                 "--precisions", "fp32", "bf16"])
    assert set(bf16["seconds_per_step"]) == {"lat32@2", "lat32@2@bf16"}
    assert all(seconds > 0 for seconds in report["seconds_per_step"].values()) and report["render_4_scenes_s"] > 0


def test_graft_maps_each_v1_level_one_level_down():
    """lat32 = v1's levels under a new 32×32 level: v1 level i is lat32 level i + 1, the middle block and the time
    embedding carry over, and everything taken has the source's values."""
    from diffusers.models.embeddings import get_timestep_embedding

    from train.toyworld.grow import graft, merged_frequencies, source_name
    from train.toyworld.models import make_unet

    assert source_name("down_blocks.2.attentions.0.proj_in.weight") == "down_blocks.1.attentions.0.proj_in.weight"
    assert source_name("up_blocks.1.resnets.0.conv1.weight") == "up_blocks.1.resnets.0.conv1.weight"
    assert source_name("mid_block.resnets.0.conv1.bias") == "mid_block.resnets.0.conv1.bias"
    assert source_name("down_blocks.0.resnets.0.conv1.weight") is None  # the new 32×32 level
    assert source_name("up_blocks.3.resnets.0.conv1.weight") is None and source_name("conv_in.weight") is None
    v1, lat32 = make_unet(1, "v1"), make_unet(2, "lat32", 256)  # as grow.py makes it
    assert lat32.config.sample_size == 32 and lat32.time_embedding.linear_2.out_features == 256
    fresh = {k: v.clone() for k, v in lat32.state_dict().items()}
    report = graft(lat32, v1.state_dict())
    after, source = lat32.state_dict(), v1.state_dict()
    assert report["parameters_taken"] > 20 * report["parameters_new"]  # most of the model carries over
    attn = "transformer_blocks.0.attn2.to_k.weight"
    assert torch.equal(after[f"down_blocks.3.attentions.0.{attn}"], source[f"down_blocks.2.attentions.0.{attn}"])
    # The timestep embedding carries over, so every grafted resnet keeps its time input.
    assert torch.equal(after["time_embedding.linear_2.weight"], source["time_embedding.linear_2.weight"])
    assert torch.equal(after["down_blocks.2.resnets.0.time_emb_proj.weight"],
                       source["down_blocks.1.resnets.0.time_emb_proj.weight"])
    # lat32's 32-dimensional sinusoid is v1's 64-dimensional one at the even frequencies (cos half, then sin half)...
    t = torch.tensor([0.0, 17.0, 500.0, 999.0])
    even = [*range(0, 32, 2), *range(32, 64, 2)]
    assert torch.allclose(get_timestep_embedding(t, 32, True, 0), get_timestep_embedding(t, 64, True, 0)[:, even],
                          atol=1e-5)
    # ...so linear_1 takes v1's columns there, each with the next odd frequency's column added.
    w = source["time_embedding.linear_1.weight"]
    assert torch.equal(after["time_embedding.linear_1.weight"], merged_frequencies(w, 32))
    assert torch.equal(merged_frequencies(w, 32)[:, 0], w[:, 0] + w[:, 1])
    assert torch.equal(merged_frequencies(w, 32)[:, 16], w[:, 32] + w[:, 33])
    with pytest.raises(ValueError, match="cannot map"):
        merged_frequencies(w, 16)
    assert torch.equal(after["conv_in.weight"], fresh["conv_in.weight"])  # new: 4 latent channels, not 8
    assert torch.equal(after["down_blocks.0.resnets.0.conv1.weight"], fresh["down_blocks.0.resnets.0.conv1.weight"])
    # The first 16×16 resnet now takes 32 channels from the new level, not 64 from conv_in: it stays new.
    assert torch.equal(after["down_blocks.1.resnets.0.conv1.weight"], fresh["down_blocks.1.resnets.0.conv1.weight"])
    assert report["tensors_taken"] + report["tensors_new"] == len(after)


def test_quick_build_grown_from_the_shipped_checkpoint(tmp_path):
    """--grow-from: no encoder or base training; the zeroft stage starts from the grown model (the shipped adapter
    and object encoder, v1's inner levels) and the export takes --defaults-from's views and guidance, no sweeps."""
    from safetensors.torch import load_file

    from train.toyworld.build import main
    from zeroft import ZeroFTPipeline
    from zeroft.config import ZeroFTConfig

    shipped = ROOT / "assets" / "zeroft-toy"
    (tmp_path / "assets" / "toyworld-judge").mkdir(parents=True)
    for name in ("judge.safetensors", "judge.json"):
        shutil.copyfile(ROOT / "assets" / "toyworld-judge" / name, tmp_path / "assets" / "toyworld-judge" / name)
    argv = ["build", "--quick", "--unet", "lat32", "--grow-from", str(shipped), "--defaults-from", str(shipped),
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--assets", str(tmp_path / "assets"),
            "--device", "cpu", "--workers", "0"]
    report = main(argv)
    assert set(report["stages"]) >= {"vae", "grow", "judge", "zeroft"} and "base" not in report["stages"]
    assert report["stages"]["grow"]["adapter_layers"] == 7 and report["stages"]["judge"]["copied_from"]
    assert "guidance_sweep_on_training_identities" not in report
    encoder = load_file(str(tmp_path / "work" / "encoder" / "encoder" / "open_clip_model.safetensors"))
    assert all(torch.equal(v, load_file(str(shipped / "encoder" / "open_clip_model.safetensors"))[k])
               for k, v in encoder.items())
    config, source = ZeroFTConfig.load(tmp_path / "out"), ZeroFTConfig.load(shipped)
    assert config.encoder.views == source.encoder.views
    assert (config.defaults.text_guidance, config.defaults.object_guidance) == (
        source.defaults.text_guidance, source.defaults.object_guidance)
    assert config.training["init_checkpoint"].endswith("init")
    pipe = ZeroFTPipeline.from_pretrained(tmp_path / "out", device="cpu")
    assert pipe.unet.config.sample_size == 32 and pipe.vae.config.latent_channels == 4
    image = tmp_path / "assets" / "examples" / "object-01.png"
    assert pipe("one object on a white background", object_image=image, num_inference_steps=2, seed=0).images[0].size == (64, 64)
    # Its evaluation has no fine-tuning row: a grown build has no trained base model to fine-tune.
    from bench.toyworld_eval import main as evaluation

    result = evaluation(["--checkpoint", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--references", "1",
                         "--judge", str(tmp_path / "assets" / "toyworld-judge" / "judge.safetensors"),
                         "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert "grown from" in result["finetune_skipped"] and not any("fine-tuning" in row for row in result["rows"])
    assert result["rows"]["zeroft"]["pairs"] == 96
    # The same work folder cannot grow from another checkpoint.
    with pytest.raises(SystemExit, match="not one grown from"):
        main([*argv[:5], str(tmp_path / "out"), *argv[6:]])


def test_grow_needs_the_lat32_unet_and_a_checkpoint(tmp_path):
    from train.toyworld.build import main

    shipped = str(ROOT / "assets" / "zeroft-toy")
    with pytest.raises(SystemExit, match="add --unet lat32"):
        main(["build", "--quick", "--grow-from", shipped, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
              "--assets", str(tmp_path / "a"), "--device", "cpu", "--workers", "0", "--vae-steps", "1"])
    with pytest.raises(SystemExit, match="no zeroft checkpoint there"):
        main(["build", "--quick", "--unet", "lat32", "--grow-from", str(tmp_path), "--work", str(tmp_path / "w")])
