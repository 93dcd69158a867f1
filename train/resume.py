"""Resumable training: the state of a run at the end of each epoch, written atomically, and its restoration.

``RUN/train_state.pt`` holds everything the next epoch depends on: the network (teacher included), every optimiser,
the FP16 loss scaler, the weights' moving average where the run keeps one, the random sources (the shuffling
generator, the method's NumPy and torch generators, the global torch generator, CUDA's), the completed epoch count,
the loss history and the training time so far, plus the settings of the run. Restoring it after rebuilding the run
the same way continues the run exactly: on the CPU an interrupted and resumed run ends with the same weights as an
uninterrupted one. The file is replaced atomically at each epoch's end (an interruption never leaves a half-written
state) and removed once the final checkpoint is written. It loads with ``torch.load(weights_only=True)``: no
pickled code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdk.errors import RdedgeError
from sdk.fileio import atomic_path

from .methods import Method
from .model import ReverseDistillationNet
from .weight_average import WeightAverage

TRAIN_STATE = "train_state.pt"
"""File name of the resumable state inside a run folder."""
STATE_FORMAT = "rdedge-train-state"
STATE_VERSION = 1

RESUMABLE_CHANGES = ("epochs", "steps", "out")
"""Settings a resumed run may change: more (or fewer) epochs or steps than the interrupted one asked for, and the
run folder's path (a folder moved or copied elsewhere resumes there)."""


SETTINGS_ADDED = {"feature_norm": "none", "map_sigma": 4.0, "map_pool": 1, "lr_schedule": "constant",
                  "augment": "none", "weight_average": 0.0, "hard_images": 0.0, "bn_freeze": 0.0,
                  "embedding_channels": None}
"""Settings added after state files were first written, with the value that an older state file ran with."""


class ResumeError(RdedgeError, ValueError):
    """A run that cannot be resumed (or started) as asked: no state, a finished run, other settings."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the last complete epoch is kept; the message says how to continue.

    A :class:`KeyboardInterrupt`, so scripts that handle Ctrl-C keep doing so; ``rdedge train`` exits with 130.
    """


@dataclass(frozen=True)
class ResumePoint:
    """Where a restored run continues.

    Attributes:
        epoch: Epochs already completed (the next one to run, 0-based).
        history: Mean loss of each completed epoch.
        train_seconds: Training time spent so far, over every session of the run.
        held_out: Median score of the held-out good images after each completed epoch (None for epochs of a run
            saved before this was recorded).
    """

    epoch: int
    history: list[float]
    train_seconds: float
    held_out: list[float | None] = field(default_factory=list)


def state_path(out_dir: str | os.PathLike[str]) -> Path:
    """The resumable state file of a run folder."""
    return Path(out_dir) / TRAIN_STATE


def random_states(shuffle: torch.Generator, method: Method) -> dict[str, Any]:
    """Every random source the next epoch draws from."""
    states: dict[str, Any] = {"shuffle": shuffle.get_state(), "method": method.random_state(),
                              "torch": torch.get_rng_state()}
    if method.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(method.device)
    return states


def save_state(out_dir: str | os.PathLike[str], *, settings: dict[str, Any], point: ResumePoint,
               net: ReverseDistillationNet, optimizers: list[torch.optim.Optimizer],
               scaler: torch.amp.GradScaler, shuffle: torch.Generator, method: Method,
               average: WeightAverage | None = None) -> Path:
    """Write the run's state after ``point.epoch`` completed epochs, atomically (temporary file, then rename)."""
    payload = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "settings": settings,
        "epoch": point.epoch,
        "history": list(point.history),
        "held_out_history": list(point.held_out),
        "train_seconds": point.train_seconds,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizers": [opt.state_dict() for opt in optimizers],
        "scaler": scaler.state_dict(),
        "random": random_states(shuffle, method),
    }
    if average is not None:
        payload["weight_average"] = average.state_dict()
    path = state_path(out_dir)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_state(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a run's state file (weights only).

    Raises:
        ResumeError: No state (with why: a finished run, or none started), or an unreadable one.
    """
    path = state_path(out_dir)
    if not path.is_file():
        from .checkpoint import CHECKPOINT_NAME

        if (Path(out_dir) / CHECKPOINT_NAME).is_file():
            raise ResumeError(f"nothing to resume in {out_dir}: its run finished ({CHECKPOINT_NAME} is there); "
                              "train again without --resume into another --out")
        raise ResumeError(f"nothing to resume in {out_dir}: no {TRAIN_STATE} (no run was interrupted there); "
                          "start it without --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResumeError(f"cannot read {path} (truncated or not a training state: {first_line}); delete it to "
                          "start the run over") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path} is not an rdedge training state; delete it to start the run over")
    if payload.get("format_version", 0) > STATE_VERSION:
        raise ResumeError(f"{path} was written by a newer rdedge (format {payload['format_version']})")
    return payload


def check_settings(saved: dict[str, Any], settings: dict[str, Any], path: Path) -> None:
    """Refuse to resume with settings that would make another run than the interrupted one.

    Raises:
        ResumeError: Naming each setting that differs, with both values.
    """
    keys = sorted((set(saved) | set(settings)) - set(RESUMABLE_CHANGES))
    saved = {**SETTINGS_ADDED, **saved}
    differ = [f"{k}: {saved.get(k)!r} then, {settings.get(k)!r} now" for k in keys if saved.get(k) != settings.get(k)]
    if differ:
        raise ResumeError(f"{path} is a run with other settings ({'; '.join(differ)}); resume it with the same "
                          "options (only --epochs may change), or train into another --out")


def restore_state(payload: dict[str, Any], *, settings: dict[str, Any], net: ReverseDistillationNet,
                  optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler,
                  shuffle: torch.Generator, method: Method, out_dir: str | os.PathLike[str],
                  average: WeightAverage | None = None) -> ResumePoint:
    """Put a freshly built run (same settings, same device) into the saved state → where it continues.

    Raises:
        ResumeError: Other settings, or a state that does not fit the network.
    """
    path = state_path(out_dir)
    check_settings(payload["settings"], settings, path)
    try:
        net.load_state_dict(payload["model"])
        for opt, saved in zip(optimizers, payload["optimizers"], strict=True):
            opt.load_state_dict(saved)
        if average is not None:
            average.load_state_dict(payload["weight_average"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ResumeError(f"{path} does not fit this network: {exc}") from exc
    scaler.load_state_dict(payload["scaler"])
    states = payload["random"]
    shuffle.set_state(states["shuffle"])
    method.restore_random_state(states["method"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], method.device)
    epoch = int(payload["epoch"])
    held_out = payload.get("held_out_history", [None] * epoch)  # a state file from before it was recorded
    return ResumePoint(epoch=epoch, history=[float(v) for v in payload["history"]],
                       train_seconds=float(payload["train_seconds"]),
                       held_out=[None if v is None else float(v) for v in held_out])


def refuse_to_overwrite(out_dir: str | os.PathLike[str]) -> None:
    """A fresh start into a folder that holds an interrupted run would throw that run away: refuse.

    Raises:
        ResumeError: Saying how far the interrupted run got, and the two ways on.
    """
    path = state_path(out_dir)
    if path.is_file():
        raise ResumeError(f"{out_dir} holds an interrupted run ({path.name}): continue it with the same command "
                          f"and --resume, or delete {path} to start over")


__all__ = [
    "RESUMABLE_CHANGES",
    "TRAIN_STATE",
    "ResumeError",
    "ResumePoint",
    "TrainingInterrupted",
    "read_state",
    "refuse_to_overwrite",
    "restore_state",
    "save_state",
    "state_path",
]
