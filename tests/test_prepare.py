"""train.prepare: captions + attributes + masks, incremental and crash-safe, read directly by train.train."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from train.captions import Vocabulary, ZeroShotAttributes, combine
from train.prepare import main
from train.sources import Columns, open_source
from train.tiny_data import write_domain_imagefolder, write_tiny_captioner, write_tiny_zero_shot_clip

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep-models")
    return {"captioner": write_tiny_captioner(root / "blip"), "clip": write_tiny_zero_shot_clip(root / "clip")}


@pytest.fixture
def photos(tmp_path):
    """One sub-folder per identity, as identity datasets are laid out."""
    source = write_domain_imagefolder(tmp_path / "flat")
    tree = tmp_path / "tree"
    for row in (json.loads(line) for line in (source / "metadata.jsonl").read_text().splitlines()):
        (tree / row["identity"]).mkdir(parents=True, exist_ok=True)
        Image.open(source / row["file_name"]).save(tree / row["identity"] / row["file_name"])
    return tree


def _records(output: Path) -> list[dict]:
    return pq.read_table(output / "data.parquet").to_pylist()


def test_folder_of_identities_to_training_records(photos, models, tmp_path, tiny_checkpoint):
    vocabulary = tmp_path / "vocab.json"
    vocabulary.write_text(json.dumps({"zero_shot": {"template": "a photo of a {} square", "threshold": 0.0,
                                                    "groups": [["red", "green", "yellow"]]}}))
    output = tmp_path / "prepared"
    summary = main(["--input", str(photos), "--output", str(output), "--captioner", str(models["captioner"]),
                    "--vocabulary", str(vocabulary), "--zero_shot_model", str(models["clip"]), "--masker", "border",
                    "--batch_size", "4"])
    records = _records(output)
    assert len(records) == 9 and summary["identities"] == 3 and summary["images_per_identity"]["min"] == 3
    for record in records:
        assert record["identity"] in ("red", "green", "yellow")
        assert record["caption_coarse"] and record["caption_fine"] in ("red", "green", "yellow")
        assert record["caption"] == combine(record["caption_coarse"], [record["caption_fine"]])
        mask = Image.open(output / record["mask"])
        assert mask.size == Image.open(output / record["image"]).size
    assert summary["caption_words"]["max"] >= summary["caption_words"]["min"] >= 2
    assert summary["images_per_second_this_run"] > 0

    # train.train reads the output as it is, for 2 steps
    from train.train import main as train

    export = train(["--base_model", str(tiny_checkpoint / "base"), "--encoder", str(tiny_checkpoint / "encoder"),
                    "--domain_data", str(output), "--mix_ratio", "1", "--resolution", "64", "--train_batch_size", "2",
                    "--max_train_steps", "2", "--output_dir", str(tmp_path / "run"), "--report_to", "none"])
    assert (export / "adapter.safetensors").is_file()


def test_attribute_columns_become_phrases(tmp_path, models):
    rows = []
    for index, (glasses, smiling) in enumerate([("1", "-1"), ("-1", "1"), ("1", "1")]):
        face = Image.new("RGB", (48, 48), (30, 30, 30))
        face.paste((220, 180 - 40 * index, 150), (12, 10, 36, 40))
        face.save(tmp_path / f"face{index}.png")
        rows.append({"image": f"face{index}.png", "identity": f"p{index % 2}", "Eyeglasses": glasses, "Smiling": smiling})
    manifest = tmp_path / "faces.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vocabulary = tmp_path / "vocab.json"
    vocabulary.write_text(json.dumps({"columns": {"Eyeglasses": "wearing eyeglasses", "Smiling": "smiling"}}))
    main(["--input", str(manifest), "--output", str(tmp_path / "out"), "--captioner", str(models["captioner"]),
          "--vocabulary", str(vocabulary), "--masker", "border"])
    fine = {Path(r["source"]).name: r["caption_fine"] for r in _records(tmp_path / "out")}
    assert fine["face0.png"] == "wearing eyeglasses"
    assert fine["face1.png"] == "smiling"
    assert fine["face2.png"] == "wearing eyeglasses, smiling"


def test_zero_shot_picks_the_most_probable_phrase_above_the_threshold(models):
    vocabulary = Vocabulary(groups=[["red", "green", "yellow"], ["striped", ""]], threshold=0.0)
    scorer = ZeroShotAttributes(vocabulary, str(models["clip"]))
    images = [Image.new("RGB", (40, 40), (200, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 200))]
    scores = scorer.scores(images)
    phrases = scorer(images)
    for per_group, chosen in zip(scores, phrases):
        expected = [g[int(p.argmax())] for g, p in zip(vocabulary.groups, per_group) if g[int(p.argmax())]]
        assert chosen == expected
    strict = ZeroShotAttributes(Vocabulary(groups=vocabulary.groups, threshold=1.01), str(models["clip"]))
    assert strict(images) == [[], []]  # nothing is that certain


def test_classname_captions_are_the_paper_baseline(photos, tmp_path):
    main(["--input", str(photos), "--output", str(tmp_path / "out"), "--caption", "classname", "--class_name", "toy",
          "--masker", "border"])
    assert {r["caption"] for r in _records(tmp_path / "out")} == {"a photo of a toy"}


def test_corrupt_files_are_skipped_and_reported(photos, tmp_path, models):
    (photos / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    summary = main(["--input", str(photos), "--output", str(tmp_path / "out"), "--captioner", str(models["captioner"]),
                    "--masker", "border"])
    assert summary["usable"] == 9
    assert [s["source"].endswith("broken.png") for s in summary["skipped_unreadable"]] == [True]


def test_empty_masks_are_flagged_not_used(photos, tmp_path):
    Image.new("RGB", (64, 64), (128, 128, 128)).save(photos / "red" / "blank.png")  # nothing to find
    summary = main(["--input", str(photos), "--output", str(tmp_path / "out"), "--caption", "classname",
                    "--masker", "border"])
    assert [f["reason"] for f in summary["flagged"]] == ["empty mask"]
    assert all(not r["source"].endswith("blank.png") for r in _records(tmp_path / "out"))


def test_single_image_identity_is_reported(photos, tmp_path):
    (photos / "lonely").mkdir()
    Image.open(next((photos / "red").iterdir())).save(photos / "lonely" / "one.png")
    summary = main(["--input", str(photos), "--output", str(tmp_path / "out"), "--caption", "classname",
                    "--masker", "border"])
    assert summary["single_image_identities"] == ["lonely"]


def test_webdataset_output_reads_back(photos, tmp_path):
    main(["--input", str(photos), "--output", str(tmp_path / "out"), "--caption", "classname", "--masker", "border",
          "--format", "wds", "--shard_size", "4"])
    shards = sorted((tmp_path / "out" / "shards").glob("*.tar"))
    assert len(shards) == 3
    table = open_source(str(tmp_path / "out" / "shards"), Columns())
    assert len(table) == 9 and "mask" in table.record(0) and table.record(0)["identity"]


def test_interrupted_run_resumes_without_duplicates(photos, tmp_path, models):
    output = tmp_path / "out"
    argv = [sys.executable, "-m", "train.prepare", "--input", str(photos), "--output", str(output),
            "--captioner", str(models["captioner"]), "--masker", "border", "--batch_size", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = output / "progress.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if progress.is_file() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(progress.read_text().splitlines())
    assert 3 <= partial < 9, "the kill should land part-way through"
    finished = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["processed_this_run"] <= 9 - partial + 1
    records = _records(output)
    assert len(records) == 9 and len({r["key"] for r in records}) == 9
    assert len(list((output / "images").glob("*.png"))) == 9
