"""Scenes and training streams: deterministic renderings, held-out identities kept out, the same files from worker processes."""

import json

import numpy as np

from toyworld.scenes import Scenes, write_streams
from toyworld.world import COLOURS, PATTERNS, SHAPES, all_identities, split_identities


def test_rendering_is_deterministic():
    identities = all_identities()
    a = Scenes(5, identities)[17]
    b = Scenes(5, identities)[17]
    assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) and a["caption"] == b["caption"]
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(Scenes(6, identities)[17]["image"]))


def test_held_out_identities_never_reach_the_training_streams(tmp_path):
    train, held_out = split_identities()
    write_streams(tmp_path, train, general=300, per_identity=2, seed=0)
    general = [json.loads(line) for line in (tmp_path / "general" / "data.jsonl").read_text().splitlines()]
    domain = [json.loads(line) for line in (tmp_path / "domain" / "data.jsonl").read_text().splitlines()]
    assert not {row["identity"] for row in general} & {i.name for i in held_out}
    assert {row["identity"] for row in domain} == {i.name for i in train}
    for row in domain:  # context-only captions: the identity must come from the photo
        assert not set(row["caption"].split()) & (set(COLOURS) | set(SHAPES) | set(PATTERNS))


def test_streams_written_by_worker_processes_are_the_same_files(tmp_path):
    train, _ = split_identities()
    write_streams(tmp_path / "inline", train, general=40, per_identity=1, seed=3)
    write_streams(tmp_path / "pool", train, general=40, per_identity=1, seed=3, workers=2)
    inline = sorted(p.relative_to(tmp_path / "inline") for p in (tmp_path / "inline").rglob("*") if p.is_file())
    pooled = sorted(p.relative_to(tmp_path / "pool") for p in (tmp_path / "pool").rglob("*") if p.is_file())
    assert inline == pooled and len(inline) == 40 + 2 * len(train) + 2
    for name in inline:
        assert (tmp_path / "inline" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes(), name
