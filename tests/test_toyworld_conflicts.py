"""The conflict evaluation (toyworld.experiments.conflicts): conflict pairs really conflict, background copy is read
right on renderings whose answer is known, unmasked references keep their background, and the ceiling uses no photo."""

import numpy as np
import pytest
import torch

from toyworld.evaluate import Pair, generate, load_judge, make_pairs, whole_photo
from toyworld.experiments import conflicts
from toyworld.world import BACKGROUNDS, Context, general_caption, random_pose, render, split_identities
from zeroft import ZeroFTPipeline

JUDGE = "assets/toyworld-judge/judge.safetensors"


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(split_identities()[1], 3, 500)  # the evaluation's own pairs


def test_conflict_pairs_really_conflict(pairs):
    """The photo shows one background, the prompt asks for another: in the pixels, not only in the labels."""
    conflicting = [p for p in pairs if conflicts.conflicts(p)]
    assert len(pairs) >= 288 and len(conflicting) == len(pairs) * 6 // 8  # 2 of the 8 prompts share the photo's
    for pair in conflicting:
        corner = np.asarray(pair.reference)[0, 0]
        assert tuple(corner) == BACKGROUNDS[pair.reference_context.background] != BACKGROUNDS[pair.context.background]
        assert pair.context.background in pair.prompt and pair.reference_context.background not in pair.prompt
    figure = conflicts.conflict_references(split_identities()[1], "white", 4, 0)
    assert len(figure) == 12 and all(conflicts.conflicts(p) for p in figure)
    assert {p.reference_context.background for p in figure} == {"white"}


def test_background_copy_on_renderings_whose_answer_is_known(pairs):
    """Outputs that copy the photo's background score background copy 1 and text on conflicts 0; outputs that draw
    the prompt's score 0 and 1; the standard error is that of a rate."""
    judge = load_judge(JUDGE)
    chosen = pairs[::3]
    rng = np.random.default_rng(0)
    poses = [p.reference_pose if p.context.count == "one" else random_pose(rng, "two") for p in chosen]
    copied = [render(p.identity, Context(p.reference_context.background, p.context.count), pose)[0]
              for p, pose in zip(chosen, poses)]
    followed = [render(p.identity, p.context, pose)[0] for p, pose in zip(chosen, poses)]
    copy_row, follow_row = conflicts.conflict_score(judge, copied, chosen), conflicts.conflict_score(judge, followed, chosen)
    assert copy_row["conflict_pairs"] == follow_row["conflict_pairs"] == sum(map(conflicts.conflicts, chosen)) > 50
    assert copy_row["background_copy"] > 0.95 and copy_row["text_on_conflicts"] < 0.05
    assert follow_row["background_copy"] < 0.05 and follow_row["text_on_conflicts"] > 0.95
    assert follow_row["identity"] > 0.9 and follow_row["position_copy"] > 0.9  # the same object, in the same pose
    rate, n = copy_row["background_copy"], copy_row["conflict_pairs"]
    assert copy_row["background_copy_se"] == pytest.approx(np.sqrt(rate * (1 - rate) / n))
    assert conflicts.standard_error(0.5, 100) == pytest.approx(0.05)
    table = conflicts.table({"copy": copy_row}, conflicts._chance())
    assert "± " in table and "| chance |" in table and "0.250" in table  # background copy's chance: 1 in 4


class Recorder:
    """A stand-in pipeline that records what it is asked and returns gray images."""

    def __init__(self):
        self.calls, self.encoded = [], []

    def set_progress_bar_config(self, **_):
        pass

    def encode_object(self, image, mask=None):
        self.encoded.append(mask)
        return torch.zeros(1, 4), [mask]

    def __call__(self, prompt, **kwargs):
        self.calls.append((list(prompt), kwargs))
        return type("Out", (), {"images": [render(*_any_scene())[0] for _ in prompt]})()


def _any_scene():
    identity = split_identities()[1][0]
    return identity, Context("gray", "one"), make_pairs([identity], 1, 0)[0].reference_pose


def test_the_ceiling_uses_no_photo_and_unmasked_references_keep_their_background(pairs):
    chosen = pairs[:4]
    recorder = Recorder()
    conflicts.generate_ceiling(recorder, chosen, 7.5, 2)
    (prompts, kwargs), = recorder.calls
    assert recorder.encoded == [] and "image_embeds" not in kwargs and "object_image" not in kwargs
    assert prompts == [general_caption(p.identity, p.context) for p in chosen]
    generate(recorder, chosen, 7.5, 5.0, 2, masked=False)
    assert all(np.array_equal(mask, whole_photo(p.reference)) for mask, p in zip(recorder.encoded, chosen))

    # The real pipeline: the ceiling's images do not depend on the photo; an unmasked photo encodes differently.
    pipe = ZeroFTPipeline.from_pretrained("assets/zeroft-toy")
    others = [Pair(q.reference, p.identity, p.reference_context, p.reference_pose, p.context, p.seed)
              for p, q in zip(chosen, pairs[100:104])]
    first, second = conflicts.generate_ceiling(pipe, chosen, 7.5, 2), conflicts.generate_ceiling(pipe, others, 7.5, 2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, second))
    reference = chosen[0].reference
    masked, unmasked = pipe.encode_object(reference)[0], pipe.encode_object(reference, whole_photo(reference))[0]
    assert not torch.allclose(masked, unmasked)
