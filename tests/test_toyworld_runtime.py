"""Where toy-world stages run: rendering ahead in worker processes changes nothing, and the device choice."""

import pytest
import torch

from toyworld.runtime import build_device, default_workers, prefetch
from toyworld.scenes import Scenes
from toyworld.stages import EncoderBatch, SceneBatch
from toyworld.world import split_identities
from zeroft.errors import InputError


def test_prefetched_batches_are_the_inline_batches():
    """Rendering ahead in worker processes changes nothing a step sees, also from a resumed step."""
    train_ids, _ = split_identities()
    for make in (SceneBatch(Scenes(3, train_ids), 4), EncoderBatch(train_ids[:5], 3)):
        inline = list(prefetch(make, 2, 6, workers=0))
        ahead = list(prefetch(make, 2, 6, workers=2))
        assert len(inline) == len(ahead) == 4
        for a, b in zip(inline, ahead):
            key = "pixels" if "pixels" in a else "views"
            assert torch.equal(a[key], b[key])
            assert all(torch.equal(a["labels"][k], b["labels"][k]) for k in a["labels"])


def test_device_choice():
    assert build_device("cpu").type == "cpu"
    assert build_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_workers(torch.device("cpu")) == 0
    assert 1 <= default_workers(torch.device("cuda")) <= 8
    with pytest.raises(InputError, match="expected auto, cpu or cuda"):
        build_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            build_device("cuda")
