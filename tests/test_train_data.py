"""The paper's regularizers, observed at their configured rates; sources; clear data errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import MixedTrainingData, Regularization, global_indices, open_streams
from train.sources import Columns, open_source
from zeroft.errors import InputError
from zeroft.tiny import tiny_encoder

from train.tiny_data import write_domain_imagefolder, write_domain_shards, write_general_jsonl

N = 3000  # samples per rate estimate: 3 standard deviations of a rate p is 3·sqrt(p(1-p)/N) ≤ 0.028


def _tolerance(p: float, n: int) -> float:
    return 4 * np.sqrt(max(p * (1 - p), 1e-4) / n) + 1e-3


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    domain = write_domain_imagefolder(root / "domain")
    general = write_general_jsonl(root / "general")
    return open_streams(str(domain), str(general), Columns(), Columns())


class _NoPixels:
    """Stand-in encoder preprocessing: the rates do not depend on pixels, and this keeps N samples fast."""

    image_size = 8

    def preprocess(self, image, mask):
        return torch.from_numpy(np.asarray(mask, np.float32)[:8, :8]).expand(3, 8, 8)


def _samples(streams, regularization, n=N, seed=0):
    data = MixedTrainingData(*streams, _NoPixels(), 16, regularization, seed, masker="border")
    return [data[g] for g in range(n)]


def test_mixing_ratio(streams):
    for r in (0.0, 0.3, 1.0):
        samples = _samples(streams, Regularization(mix_ratio=r), n=1000 if r in (0.0, 1.0) else N)
        rate = np.mean([s["stream"] == "domain" for s in samples])
        assert abs(rate - r) <= _tolerance(r, len(samples)), (r, rate)


def test_cross_reference_rate_and_identity(streams):
    domain_stream = streams[0]
    omega = 0.4
    samples = [s for s in _samples(streams, Regularization(mix_ratio=1.0, cross_reference=omega)) if s["stream"] == "domain"]
    crossed = [s for s in samples if s["condition_record"] != s["record"]]
    assert abs(len(crossed) / len(samples) - omega) <= _tolerance(omega, len(samples))
    for s in crossed:  # eq. 3: ANOTHER photo, of the SAME identity
        assert domain_stream.identities[s["condition_record"]] == domain_stream.identities[s["record"]]


def test_general_samples_drop_the_object(streams):
    samples = [s for s in _samples(streams, Regularization(mix_ratio=0.0, drop_object=0, drop_both=0), n=500)]
    assert all(not s["use_object"] for s in samples)
    assert all(torch.count_nonzero(s["condition"]) == 0 for s in samples)
    kept = _samples(streams, Regularization(mix_ratio=0.0, drop_general_object=False, drop_object=0, drop_both=0), n=200)
    assert all(s["use_object"] and s["condition_record"] == s["record"] for s in kept)


def test_condition_dropout_rates(streams):
    reg = Regularization(mix_ratio=1.0, cross_reference=0.0, drop_text=0.1, drop_object=0.15, drop_both=0.05)
    samples = _samples(streams, reg)
    text_only = np.mean([s["caption"] == "" and s["use_object"] for s in samples])
    object_only = np.mean([s["caption"] != "" and not s["use_object"] for s in samples])
    both = np.mean([s["caption"] == "" and not s["use_object"] for s in samples])
    for rate, expected in ((text_only, 0.1), (object_only, 0.15), (both, 0.05)):
        assert abs(rate - expected) <= _tolerance(expected, N), (rate, expected)


def test_background_masking_of_the_condition(streams):
    encoder = tiny_encoder()
    masked = MixedTrainingData(*streams, encoder, 16, Regularization(mix_ratio=1.0, cross_reference=0.0, drop_object=0,
                                                                      drop_both=0, drop_text=0), 0)
    raw = MixedTrainingData(*streams, encoder, 16, Regularization(mix_ratio=1.0, cross_reference=0.0, drop_object=0,
                                                                   drop_both=0, drop_text=0, mask_condition=False), 0)
    fill = (torch.tensor([128 / 255] * 3) - encoder.mean.view(3)) / encoder.std.view(3)  # gray, normalised
    a, b = masked[5]["condition"], raw[5]["condition"]
    corners = a[:, 0, 0]
    assert torch.allclose(corners, fill, atol=0.02)  # x ⊗ m: the background became the fill colour
    assert not torch.allclose(b[:, 0, 0], fill, atol=0.02)  # unmasked: the blue/gray photo background


def test_a_record_mask_drawn_on_another_photo_falls_back_to_the_whole_photo(streams):
    encoder = tiny_encoder()
    reg = Regularization(mix_ratio=1.0, cross_reference=0.0, drop_object=0, drop_both=0, drop_text=0)
    data = MixedTrainingData(*streams, encoder, 16, reg, 0)
    raw = MixedTrainingData(*streams, encoder, 16, Regularization(**{**reg.__dict__, "mask_condition": False}), 0)
    record = data.domain.table.record(data[5]["condition_record"])
    wrong = {**record, "mask": Image.new("L", (40, 10), 255)}  # 4:1, the photos are square
    assert torch.equal(data._condition(wrong), raw._condition(wrong))  # training goes on, with the unmasked photo


def test_samples_are_a_pure_function_of_the_index(streams):
    reg = Regularization()
    first = MixedTrainingData(*streams, _NoPixels(), 16, reg, 7)
    second = MixedTrainingData(*streams, _NoPixels(), 16, reg, 7)
    for g in (0, 5, 123, 10**9):
        a, b = first[g], second[g]
        assert a["record"] == b["record"] and a["caption"] == b["caption"]
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["condition"], b["condition"])


def test_ranks_get_disjoint_indices():
    seen = set()
    for rank in range(2):
        for step in range(3):
            for micro in range(2):
                batch = set(global_indices(step, micro, 2, rank, 2, 4))
                assert not seen & batch
                seen |= batch
    assert seen == set(range(3 * 2 * 2 * 4))


def test_webdataset_shards(tmp_path):
    shards = write_domain_shards(tmp_path)
    table = open_source(str(shards), Columns())
    assert len(table) == 9
    record = table.record(4)
    assert record["image"].size == (64, 64) and record["identity"] in ("red", "green", "yellow") and "mask" in record


def test_missing_column_is_named(tmp_path):
    root = write_domain_imagefolder(tmp_path / "d")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['person'\]"):
        open_streams(str(root), None, Columns(identity="person"), Columns())


def test_empty_dataset(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "data.jsonl").write_text("")
    with pytest.raises(InputError, match="empty|no .tar shards"):
        open_streams(None, str(tmp_path / "e"), Columns(), Columns())


def test_identity_with_one_photo(tmp_path):
    root = write_domain_imagefolder(tmp_path / "d")
    lines = (root / "metadata.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    rows[0]["identity"] = "lonely"
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="single photo.*lonely"):
        open_streams(str(root), None, Columns(), Columns())


def test_rates_out_of_range():
    with pytest.raises(InputError, match="mix_ratio"):
        Regularization(mix_ratio=1.5)
    with pytest.raises(ValueError, match="must not exceed 1"):
        Regularization(drop_text=0.5, drop_object=0.4, drop_both=0.2)
