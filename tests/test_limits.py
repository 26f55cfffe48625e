"""Bounded work per request: size limits by backbone and device, and the time budget (fake clocks, no timing)."""

import pytest

from zeroft import InputError
from zeroft.timing import StepTimes, StepWork
from zeroft.validation import check_size_for, check_time_budget, estimate_seconds, native_size, size_limits

from conftest import FakeClock, square_photo


@pytest.mark.parametrize("native, device, limits", [
    (64, "cpu", (32, 96)),  # the toy model: a small useful range
    (64, "cuda", (32, 128)),
    (512, "cpu", (128, 768)),  # SD1.5
    (512, "cuda:1", (128, 1024)),
    (512, "mps", (128, 1024)),
    (1024, "cuda", (256, 2048)),
    (1536, "cuda", (384, 2048)),  # never above the absolute SIZE_RANGE
])
def test_size_limits_scale_with_the_backbone_and_the_device(native, device, limits):
    low, high = size_limits(native, device)
    assert (low, high) == limits and low % 8 == 0 and high % 8 == 0


def test_a_cpu_gets_a_tighter_bound_than_a_gpu():
    import torch

    assert size_limits(512, torch.device("cpu"))[1] < size_limits(512, torch.device("cuda"))[1]


def test_check_size_for_names_the_range_and_the_reason():
    assert check_size_for("height", 96, 64, "cpu") == 96
    with pytest.raises(InputError, match=r"height must be between 32 and 96 pixels for this model on a CPU "
                                         r"\(it was trained at 64 px\), not 1024"):
        check_size_for("height", 1024, 64, "cpu")
    with pytest.raises(InputError, match="multiple of 8"):
        check_size_for("width", 90, 64, "cpu")


def test_native_size_is_the_larger_of_the_unet_and_the_checkpoint_defaults(tiny_pipe):
    class Defaults:
        height, width = 64, 48

    assert native_size(64, 8) == 512 and native_size(16, 2, Defaults) == 64 and native_size(16, 4, Defaults) == 64
    assert tiny_pipe.native_size == 64  # the tiny UNet's sample_size says 32 px, the checkpoint 64


def test_the_pipeline_refuses_a_size_over_its_limit(tiny_pipe, photo):
    assert tiny_pipe.size_limits() == (32, 96)
    with pytest.raises(InputError, match="between 32 and 96"):
        tiny_pipe("x", object_image=photo, height=128, width=64, num_inference_steps=1, output_type="latent")
    out = tiny_pipe("x", object_image=photo, height=96, width=96, num_inference_steps=1, output_type="latent")
    assert out.settings.height == 96


def test_estimate_is_steps_times_images_times_branches_times_relative_pixels():
    base = dict(steps=10, num_images=2, height=64, width=64, native_size=64, unit_seconds=0.5, branches=3)
    assert estimate_seconds(**base) == 30.0
    assert estimate_seconds(**{**base, "steps": 20}) == 60.0
    assert estimate_seconds(**{**base, "num_images": 4}) == 60.0
    assert estimate_seconds(**{**base, "height": 128, "width": 128}) == 120.0
    assert estimate_seconds(**{**base, "branches": 1}) == 10.0


def test_time_budget_refuses_with_what_to_lower():
    request = dict(steps=20, num_images=4, height=1024, width=1024, native_size=512, unit_seconds=0.5, branches=3)
    assert check_time_budget(500, **request) == 480.0
    with pytest.raises(InputError) as caught:
        check_time_budget(60, **request)
    message = str(caught.value)
    assert "about 480 s" in message and "over the 60 s limit" in message
    assert "steps (at most 2 fit)" in message and "number of images (at most 0" not in message
    assert "size (about 360x360 fits)" in message
    with pytest.raises(InputError, match="steps, the number of images and the size together"):
        check_time_budget(0.01, **request)
    for budget in (0, -5, float("nan")):
        with pytest.raises(InputError, match="time budget must be a positive number of seconds"):
            check_time_budget(budget, **request)


@pytest.fixture
def timed_pipe(tiny_pipe, monkeypatch):
    """The tiny pipeline with nothing learned yet about its steps, timed by a fake clock (1 s per interval)."""
    clock = FakeClock(1.0)
    monkeypatch.setattr(tiny_pipe, "step_times", StepTimes())
    monkeypatch.setattr(tiny_pipe, "clock", clock)
    return tiny_pipe, clock


def _request(pipe, steps_run, **kwargs):
    settings = dict(object_image=square_photo(), num_images=2, num_inference_steps=4, text_guidance=5.0,
                    object_guidance=3.0, output_type="latent", callback=lambda step, total: steps_run.append(step))
    return pipe("x", **{**settings, **kwargs})


def test_a_request_whose_single_step_cannot_fit_is_refused_before_denoising(timed_pipe):
    pipe, clock = timed_pipe
    steps_run = []
    # one UNet call of one image takes 1 s (measured, and measured again before refusing): 2 images x 3 branches
    # make one step 6 s, over 5 s
    with pytest.raises(InputError, match="about 24 s .* over the 5 s limit. Lower the steps"):
        _request(pipe, steps_run, time_budget=5)
    assert steps_run == []


def test_a_request_estimated_over_the_budget_is_decided_by_its_first_steps(timed_pipe):
    """Estimated at 24 s against 10 s, but one step (6 s) fits: the first two steps run, timed, and decide."""
    pipe, clock = timed_pipe
    pipe.measure_unit_seconds()  # 1 s per unit, from the clock
    clock.dt = 0.5  # the steps themselves take 0.5 s: 4 steps fit 10 s
    steps_run = []
    out = _request(pipe, steps_run, time_budget=10)
    assert out.settings.steps == 4 and steps_run == [1, 2, 3, 4, 5]  # the steps and the decode
    assert pipe.step_times.estimate(StepWork(4, 2, 64, 64, 64, 3)) == 0.5  # learned from the run
    pipe.step_times = StepTimes()
    clock.dt = 1.0
    pipe.measure_unit_seconds()  # 1 s per unit again: estimated at 24 s, one step (6 s) fits
    clock.dt = 4.0  # but each step now takes 4 s: the probe says 16 s, over 10 s, and stops the request
    steps_run.clear()
    with pytest.raises(InputError, match="about 16 s .* over the 10 s limit"):
        _request(pipe, steps_run, time_budget=10)
    assert steps_run == [1]  # refused at the end of the second step


def test_a_slow_first_measurement_does_not_stick(timed_pipe):
    """A busy machine measures the unit 100x too slow: the request is not refused for good, and once it has
    run, what it measured is what later requests are estimated by."""
    pipe, clock = timed_pipe
    clock.dt = 100.0
    pipe.measure_unit_seconds()  # 100 s per unit: one step of the request "600 s"
    clock.dt = 0.01  # the machine is calm again
    steps_run = []
    assert _request(pipe, steps_run, time_budget=120).settings.steps == 4
    assert pipe.unit_seconds == pytest.approx(0.01 / 6)  # the run's own steps: 0.01 s for 6 units
    for _ in range(3):
        assert _request(pipe, [], time_budget=120).settings.steps == 4


def test_requests_without_a_budget_are_not_timed(timed_pipe):
    pipe, clock = timed_pipe
    _request(pipe, [])
    assert pipe.unit_seconds is None and clock.now == 0.0


def test_unit_seconds_are_measured_with_one_warm_up_call(tiny_pipe, monkeypatch):
    calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    monkeypatch.setattr(tiny_pipe, "unit_seconds", None)
    ticks = iter([100.0, 100.25])  # a fake clock
    try:
        assert tiny_pipe.measure_unit_seconds(clock=lambda: next(ticks)) == 0.25
    finally:
        hook.remove()
    assert tiny_pipe.unit_seconds == 0.25
    assert calls == [(1, 4, 32, 32)] * 2  # one image at the native size: 64 px is 32 latent pixels


def test_the_time_budget_measures_the_unit_on_first_use(timed_pipe):
    pipe, clock = timed_pipe
    clock.dt = 2.0  # the UNet call "took" 2 s
    with pytest.raises(InputError, match="about 24 s"):  # 4 steps x 3 branches x 2 s
        pipe("x", object_image=square_photo(), num_inference_steps=4, text_guidance=5.0, object_guidance=3.0,
             time_budget=5)
    assert pipe.unit_seconds == 2.0
