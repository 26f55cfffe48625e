"""What every toy-world stage runs on: the device, the rendering processes, and resumable stage state.

``build_device`` and ``default_workers`` choose where a build runs; ``prefetch`` computes a step's
inputs ahead in worker processes (the same inputs as computed inline); ``Stage`` saves and resumes
one stage's training state. The pretraining stages (stages.py) and the stream writer (scenes.py)
both use them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zeroft.errors import InputError


def build_device(name: str = "auto") -> torch.device:
    """"auto": the GPU when there is one, else the CPU; "cuda" without a GPU is a clear error.

    Stricter than zeroft.quantization.pick_device, which inference uses: that one also picks
    Apple MPS, on which the toy-world training stages have never been run.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device {name}: expected auto, cpu or cuda.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA GPU is visible to torch here; use --device cpu.")
    return torch.device(name)


def default_workers(device: torch.device) -> int:
    """Rendering processes: none on a CPU (the training step already uses every core), up to 8 beside a GPU."""
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 2))


class _Steps(torch.utils.data.Dataset):
    def __init__(self, make: Callable[[int], dict]):
        self.make = make

    def __len__(self) -> int:
        return 2**31

    def __getitem__(self, step: int) -> dict:
        return self.make(step)


def _as_is(item):
    return item


def prefetch(make: Callable[[int], dict], start: int, stop: int, workers: int) -> Iterator[dict]:
    """``make(step)`` for step in [start, stop), in order; computed ahead in ``workers`` processes when > 0."""
    if workers <= 0:
        yield from (make(step) for step in range(start, stop))
        return
    yield from torch.utils.data.DataLoader(_Steps(make), sampler=range(start, stop), batch_size=None,
                                           num_workers=workers, prefetch_factor=4, collate_fn=_as_is)


class Stage:
    """Resumable training state of one stage, saved atomically every ``save_every`` seconds.

    ``config`` (e.g. the UNet variant) is saved with the state; a saved state made under another config, or
    whose weights do not fit ``modules``, is a clear error rather than a tensor-shape traceback."""

    def __init__(self, folder: Path, modules: dict[str, torch.nn.Module], optimizer, total_steps: int,
                 save_every: float = 180.0, config: dict | None = None):
        self.folder, self.modules, self.optimizer = folder, modules, optimizer
        self.total_steps, self.save_every, self.config = total_steps, save_every, dict(config or {})
        self.folder.mkdir(parents=True, exist_ok=True)
        self.step, self.seconds = 0, 0.0
        state_path = folder / "state.pt"
        if state_path.is_file():
            state = torch.load(state_path, weights_only=True, map_location="cpu")
            saved = state.get("config") or {}
            clash = {k: (saved[k], v) for k, v in self.config.items() if k in saved and saved[k] != v}
            if clash:
                raise InputError(f"{state_path} is a half-trained state made with "
                                 + ", ".join(f"{k} {a!r}, not {b!r}" for k, (a, b) in clash.items())
                                 + ": use another --work folder, or delete that file to start this stage again")
            try:
                for name, module in modules.items():
                    module.load_state_dict(state["modules"][name])
            except (KeyError, RuntimeError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InputError(f"{state_path} does not fit this stage's models ({first}); it was saved by another "
                                 "configuration: use another --work folder, or delete that file to start this stage "
                                 "again") from e
            optimizer.load_state_dict(state["optimizer"])
            self.step, self.seconds = state["step"], state["seconds"]
        self._last_save = time.perf_counter()
        self._started = time.perf_counter() - self.seconds

    @property
    def done(self) -> bool:
        return (self.folder / "done.json").is_file()

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def maybe_save(self, force: bool = False) -> None:
        if not force and time.perf_counter() - self._last_save < self.save_every:
            return
        temp = self.folder / "state.pt.tmp"
        torch.save({"modules": {n: m.state_dict() for n, m in self.modules.items()}, "optimizer": self.optimizer.state_dict(),
                    "step": self.step, "seconds": self.elapsed(), "config": self.config}, temp)
        temp.replace(self.folder / "state.pt")
        self._last_save = time.perf_counter()

    def finished(self, legacy: dict, clash: Callable[[dict], str]) -> dict:
        """A finished stage's done.json; an InputError saying ``clash(saved)`` when it was built under another
        ``config`` (a key that older builds did not record takes its ``legacy`` value)."""
        info = json.loads((self.folder / "done.json").read_text())
        saved = {key: info.get(key, legacy[key]) for key in self.config}
        if saved != self.config:
            raise InputError(clash(saved))
        return info

    def finish(self, info: dict) -> dict:
        info = {**self.config, **info, "steps": self.total_steps, "seconds": round(self.elapsed(), 1)}
        (self.folder / "done.json").write_text(json.dumps(info, indent=2) + "\n")
        (self.folder / "state.pt").unlink(missing_ok=True)
        return info

    def steps(self, desc: str):
        bar = tqdm(total=self.total_steps, initial=self.step, desc=desc, leave=False)
        while self.step < self.total_steps:
            yield self.step
            self.step += 1
            bar.update(1)
            self.maybe_save()
        bar.close()
