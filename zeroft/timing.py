"""How long a request's denoising steps take on this machine, and the time budget that bounds them.

What a step costs is learned from the steps that actually ran, not fixed by one measurement:
the pipeline records, after each generation run under a budget, the seconds per step of that
batch shape (images x guidance branches x latent size) and the cost unit derived from it (one
UNet evaluation of one image at the native size, zeroft.validation.estimate_seconds). A request
is estimated from its own shape where that ran before, else from the unit. Then
(:class:`BudgetWatch`):

- an estimate within the budget runs;
- an estimate over the budget whose single step still fits runs its first :data:`PROBE_STEPS`
  steps timed, and is refused after them only if those measured steps say it is over;
- an estimate in which even one step is over the budget is refused before any step runs, but
  only after the unit is measured again, now (a slow earlier measurement, taken while the machine
  was busy, does not stick).

So the estimate follows the machine: a busy first measurement, or a cost taken as linear in the
batch (on a CPU a batch of 12 small images costs far less than 12 single ones), can delay a
request by two steps, never refuse it wrongly for good.

Example:
    >>> work = StepWork(steps=20, num_images=4, height=64, width=64, native_size=64, branches=3)
    >>> times = StepTimes()
    >>> times.record(work, 0.05)  # 20 steps of this shape ran at 0.05 s each
    >>> times.estimate(work), round(times.unit_seconds, 5)
    (0.05, 0.00417)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from .validation import check_time_budget, estimate_seconds

PROBE_STEPS = 2  # steps timed before an estimate over the budget is confirmed or dropped


@dataclass(frozen=True)
class StepWork:
    """The work of one request's denoising loop, in the terms of zeroft.validation.estimate_seconds."""

    steps: int  # UNet calls of the loop (PNDM makes one more than its steps)
    num_images: int  # images in the batch, all prompts together
    height: int
    width: int
    native_size: int
    branches: float  # guidance branches per step, 1..3 (their mean over the steps with a guidance interval)

    @property
    def shape(self) -> tuple[int, int, int]:
        """What one step's cost depends on: (UNet batch, height, width)."""
        return self.num_images * self.branches, self.height, self.width

    @property
    def units_per_step(self) -> float:
        """Cost units in one step: images x branches x pixels relative to the native size."""
        return estimate_seconds(steps=1, num_images=self.num_images, height=self.height, width=self.width,
                                native_size=self.native_size, unit_seconds=1.0, branches=self.branches)

    def check(self, budget: float, seconds_per_step: float) -> float:
        """zeroft.validation.check_time_budget at ``seconds_per_step``: the estimate, or an InputError naming
        what to lower."""
        return check_time_budget(budget, steps=self.steps, num_images=self.num_images, height=self.height,
                                 width=self.width, native_size=self.native_size, branches=self.branches,
                                 unit_seconds=seconds_per_step / self.units_per_step)


class StepTimes:
    """Seconds per step by batch shape, from the last run of each shape, and the cost unit from the last run.

    ``unit_seconds`` is seconds per cost unit (one UNet call of one image at the native size):
    measured once on first use (``ZeroFTMixin.measure_unit_seconds``), then replaced by what each run
    measured.
    """

    def __init__(self):
        self.by_shape: dict[tuple[int, int, int], float] = {}
        self.unit_seconds: float | None = None

    def estimate(self, work: StepWork) -> float | None:
        """Seconds one step of ``work`` should take: its shape's last run, else the unit scaled; None if neither."""
        if work.shape in self.by_shape:
            return self.by_shape[work.shape]
        return None if self.unit_seconds is None else self.unit_seconds * work.units_per_step

    def record(self, work: StepWork, seconds_per_step: float) -> None:
        self.by_shape[work.shape] = seconds_per_step
        self.unit_seconds = seconds_per_step / work.units_per_step


class BudgetWatch:
    """One request's time budget, watched over its first steps (see the module docstring).

    Args:
        budget: seconds the request may take.
        work: what it asks for.
        seconds_per_step: the estimate of one step (:meth:`StepTimes.estimate`).
        remeasure: measures the unit again, now, and returns the new seconds per step of ``work``; called
            before a request is refused without running.
        clock: seconds as a float (a fake one in tests).

    Raises:
        InputError: not even one step fits the budget, also after measuring again.
    """

    def __init__(self, budget: float, work: StepWork, seconds_per_step: float, remeasure: Callable[[], float],
                 clock: Callable[[], float]):
        self.budget, self.work, self.clock = budget, work, clock
        if not budget > 0:
            work.check(budget, seconds_per_step)  # raises: the budget itself is wrong
        if seconds_per_step > budget:
            seconds_per_step = remeasure()
            if seconds_per_step > budget:
                work.check(budget, seconds_per_step)  # raises: steps >= 1
        self.estimate = seconds_per_step
        self.probing = work.steps * seconds_per_step > budget
        self.durations: list[float] = []
        self._started = 0.0

    def begin_step(self) -> None:
        self._started = self.clock()

    def end_step(self, share: float = 1.0) -> None:
        """Record a step; after the probe steps of a request estimated over the budget, refuse it if they say so.

        Args:
            share: this step's branches over the work's mean branches per step (a guidance interval runs fewer
                branches at some steps): the step's duration is recorded as ``duration / share``, what a mean step
                would cost, so probes taken outside the interval do not make the whole request look cheap.

        Raises:
            InputError: the probe steps, as measured, put the request over the budget.
        """
        self.durations.append(max(self.clock() - self._started, 1e-9) / share)
        if self.probing and len(self.durations) == min(PROBE_STEPS, self.work.steps):
            self.probing = False
            self.work.check(self.budget, min(self.durations))

    def seconds_per_step(self) -> float | None:
        """What a step of this request cost, the first (warm-up) step left out where others ran."""
        if not self.durations:
            return None
        return statistics.median(self.durations[1:] or self.durations)
