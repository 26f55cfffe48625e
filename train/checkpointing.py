"""Crash-safe training state: atomic save (temp folder, then rename), keep-last-K, resume latest.

A checkpoint folder ``checkpoint-<step>`` appears only once complete: everything is written
into ``.tmp-checkpoint-<step>``, flushed to disk, then renamed. A run killed mid-save leaves
the temp folder (removed at the next start) and every earlier checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

STATE_FILE = "zeroft_state.json"
PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, folder), oldest first."""
    found = []
    for path in Path(output_dir).glob(f"{PREFIX}*"):
        suffix = path.name[len(PREFIX):]
        if path.is_dir() and suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def clean_partial(output_dir: str | Path) -> list[Path]:
    """Remove temp folders left by a run killed while saving; returns what was removed."""
    removed = []
    for path in Path(output_dir).glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def save_training_state(accelerator, output_dir: str | Path, step: int, keep_last: int | None) -> Path:
    """Every process calls this; the main process renames and prunes."""
    output_dir = Path(output_dir)
    temp = output_dir / f"{TEMP_PREFIX}{step}"
    final = output_dir / f"{PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temp / STATE_FILE).write_text(json.dumps({"step": step}) + "\n")
        _fsync_tree(temp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(temp, final)
        _fsync_dir(output_dir)
        if keep_last is not None:
            for _, old in list_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``latest`` → newest complete checkpoint (or None on a fresh run); a path → that folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete training checkpoint (no {STATE_FILE})")
    return path


def load_training_state(accelerator, folder: Path, ema=None) -> int:
    """Restore a checkpoint saved by ``save_training_state``; returns its step.

    accelerate loads a registered EMA's shadow weights onto the CPU, so the EMA is moved back beside the
    model (on a GPU its foreach step would otherwise meet CPU tensors at the first step after a resume).
    """
    accelerator.load_state(str(folder))
    if ema is not None:
        ema.to(accelerator.device)
    return checkpoint_step(folder)


def checkpoint_step(folder: Path) -> int:
    return int(json.loads((folder / STATE_FILE).read_text())["step"])
