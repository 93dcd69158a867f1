"""Resumable training on real bottle images: interrupted + resumed equals uninterrupted; Ctrl-C keeps the last epoch.

Runs are tiny (64 px, 16 images, batch 8: two steps an epoch) so that every method is checked on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.resume import TRAIN_STATE, ResumeError, TrainingInterrupted, check_settings
from train.trainer import TrainingStep, train

from .conftest import REPO, wait_until

METHODS = ("rd4ad", "rdpp", "drd", "reason")


def tiny_config(data: Path, out: Path, method: str = "rd4ad", epochs: int = 3) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), method=method, epochs=epochs, image_size=64, batch_size=8,
                       max_train_images=16, seed=0)


def interrupt_at_step(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Make the ``calls``-th training step raise KeyboardInterrupt, as Ctrl-C does in the middle of an epoch."""
    step = TrainingStep.__call__
    made = {"n": 0}

    def counted(self, *args, **kwargs):
        made["n"] += 1
        if made["n"] == calls:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(TrainingStep, "__call__", counted)


@pytest.mark.parametrize(("method", "changes"), [(m, {}) for m in METHODS]
                         + [("rd4ad", {"feature_norm": "standardize"}), ("rdpp", {"lr_schedule": "cosine"}),
                            ("rd4ad", {"augment": "flip"}), ("rd4ad", {"weight_average": 0.9}),
                            ("rd4ad", {"hard_images": 0.25}), ("rd4ad", {"bn_freeze": 0.5})])
def test_a_run_interrupted_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(bottle_subset: Path,
                                                                                      tmp_path: Path, method: str,
                                                                                      changes: dict[str, str]):
    """Every method, feature standardisation, a decaying learning rate (RD++: two optimisers at two rates), flip
    augmentation (its draws continue the shuffling generator's sequence), the weights' moving average, repeated
    hard images (the resumed run scores the restored weights, the interrupted epoch's last) and frozen batch-norm
    statistics for the last half of the steps (the interruption falls on the first frozen step, so the resumed run
    makes the switch, and restarts Adam's moments, itself)."""
    whole = replace(tiny_config(bottle_subset, tmp_path / "whole", method), **changes)
    train(whole, progress=False)
    expected, expected_state = load_checkpoint(whole.out)

    split = replace(tiny_config(bottle_subset, tmp_path / "split", method), **changes)
    with pytest.MonkeyPatch.context() as patch:
        interrupt_at_step(patch, 4)  # epoch 1 is 2 steps: the interruption falls in epoch 2, after one of its steps
        with pytest.raises(TrainingInterrupted, match=r"epoch 2/3; the first 1 epoch\(s\) are kept .*--resume"):
            train(split, progress=False)
    state = torch.load(Path(split.out) / TRAIN_STATE, weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1 and len(state["held_out_history"]) == 1
    assert not (Path(split.out) / "checkpoint.pt").exists()
    assert sorted(p.name for p in Path(split.out).iterdir()) == [TRAIN_STATE]  # no temporary file left behind

    train(split, progress=False, resume=True)
    resumed, resumed_state = load_checkpoint(split.out)
    assert resumed.weights_sha256 == expected.weights_sha256
    for name, tensor in expected_state.items():
        assert torch.equal(resumed_state[name], tensor), name
    assert resumed.training["loss_history"] == expected.training["loss_history"]
    assert resumed.training["held_out_score_history"] == expected.training["held_out_score_history"]
    assert None not in expected.training["held_out_score_history"]
    assert resumed.calibration.threshold == expected.calibration.threshold
    assert resumed.training["resumed_from_epoch"] == 1
    assert not (Path(split.out) / TRAIN_STATE).exists()  # complete: nothing left to resume


def test_resuming_is_refused_with_other_settings_and_a_fresh_start_never_overwrites(bottle_subset: Path,
                                                                                     tmp_path: Path, monkeypatch):
    config = tiny_config(bottle_subset, tmp_path / "run")
    with pytest.raises(ResumeError, match=r"no train_state\.pt"):
        train(config, progress=False, resume=True)
    interrupt_at_step(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted):
        train(config, progress=False)
    monkeypatch.undo()
    before = (Path(config.out) / TRAIN_STATE).read_bytes()
    with pytest.raises(ResumeError, match=r"holds an interrupted run.*--resume"):
        train(config, progress=False)
    with pytest.raises(ResumeError, match=r"other settings \(seed: 0 then, 1 now\); .*only --epochs may change"):
        train(replace(config, seed=1), progress=False, resume=True)
    with pytest.raises(ResumeError, match="image_size: '64' then, '96' now"):
        train(replace(config, image_size=96), progress=False, resume=True)
    with pytest.raises(ResumeError, match="feature_norm: 'none' then, 'standardize' now"):
        train(replace(config, feature_norm="standardize"), progress=False, resume=True)
    assert (Path(config.out) / TRAIN_STATE).read_bytes() == before  # refusals touch nothing
    moved = replace(config, out=str(tmp_path / "moved"), epochs=2)  # a moved folder resumes; epochs may change
    shutil.move(config.out, moved.out)
    train(moved, progress=False, resume=True)
    meta, _ = load_checkpoint(moved.out)
    assert meta.training["epochs"] == 2 and len(meta.training["loss_history"]) == 2
    with pytest.raises(ResumeError, match="its run finished"):
        train(moved, progress=False, resume=True)


def test_a_corrupt_state_file_is_one_clear_error(bottle_subset: Path, tmp_path: Path):
    config = tiny_config(bottle_subset, tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / TRAIN_STATE).write_bytes(b"not a state")
    with pytest.raises(ResumeError, match=r"cannot read .*delete it to start the run over"):
        train(config, progress=False, resume=True)


def test_ctrl_c_on_the_command_keeps_the_last_complete_epoch_and_resume_finishes(bottle_subset: Path,
                                                                                  tmp_path: Path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rdedge", "train", "--quiet", "--data", str(bottle_subset), "--out", str(out),
               "--image-size", "64", "--batch-size", "8", "--max-train-images", "16", "--seed", "0"]
    # faulthandler: should the process not stop after Ctrl-C, SIGABRT makes it print where each thread was
    process = subprocess.Popen([*command, "--epochs", "500"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        wait_until(lambda: (out / TRAIN_STATE).is_file() or process.poll() is not None, timeout_s=180)
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert (out / TRAIN_STATE).is_file(), "no epoch completed in 180 s"
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            where = process.communicate(timeout=60)[1][-6000:]
            pytest.fail(f"still running 120 s after Ctrl-C; where it was:\n{where}")
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "rdedge train: interrupted: training interrupted in epoch" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    kept = torch.load(out / TRAIN_STATE, weights_only=True)["epoch"]
    assert 1 <= kept < 500 and not (out / "checkpoint.pt").exists()
    assert sorted(p.name for p in out.iterdir()) == [TRAIN_STATE]

    again = subprocess.run([*command, "--epochs", "500"], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 2 and "holds an interrupted run" in again.stderr
    done = subprocess.run([*command, "--epochs", str(kept + 1), "--resume"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads((out / "train_log.json").read_text())["training"]
    assert log["resumed_from_epoch"] == kept and len(log["loss_history"]) == kept + 1
    assert not (out / TRAIN_STATE).exists()


def test_a_state_file_from_before_the_held_out_monitor_resumes_with_those_epochs_unrecorded(bottle_subset: Path,
                                                                                              tmp_path: Path):
    config = tiny_config(bottle_subset, tmp_path / "run", epochs=2)
    with pytest.MonkeyPatch.context() as patch:
        interrupt_at_step(patch, 3)  # after epoch 1 (2 steps)
        with pytest.raises(TrainingInterrupted):
            train(config, progress=False)
    path = Path(config.out) / TRAIN_STATE
    state = torch.load(path, weights_only=True)
    del state["held_out_history"]  # as written before the monitor existed
    torch.save(state, path)
    train(config, progress=False, resume=True)
    history = load_checkpoint(config.out)[0].training["held_out_score_history"]
    assert history[0] is None and isinstance(history[1], float)


def test_a_state_file_from_before_a_setting_existed_resumes_with_that_settings_old_behaviour(tmp_path: Path):
    path = tmp_path / TRAIN_STATE
    older = {"seed": 0}  # written before feature_norm, map_sigma, map_pool, lr_schedule, augment, weight_average and
    # hard_images existed: the papers'
    check_settings(older, {"seed": 0, "map_pool": 1}, path)
    with pytest.raises(ResumeError, match=r"map_pool: 1 then, 3 now"):
        check_settings(older, {"seed": 0, "map_pool": 3}, path)
    check_settings(older, {"seed": 0, "feature_norm": "none", "map_sigma": 4.0, "lr_schedule": "constant"}, path)
    with pytest.raises(ResumeError, match=r"lr_schedule: 'constant' then, 'cosine' now"):
        check_settings(older, {"seed": 0, "feature_norm": "none", "map_sigma": 4.0, "lr_schedule": "cosine"}, path)
    check_settings(older, {"seed": 0, "augment": "none", "weight_average": 0.0}, path)
    with pytest.raises(ResumeError, match=r"augment: 'none' then, 'flip' now"):
        check_settings(older, {"seed": 0, "augment": "flip"}, path)
    with pytest.raises(ResumeError, match=r"weight_average: 0.0 then, 0.995 now"):
        check_settings(older, {"seed": 0, "weight_average": 0.995}, path)
    check_settings(older, {"seed": 0, "hard_images": 0.0}, path)
    with pytest.raises(ResumeError, match=r"hard_images: 0.0 then, 0.1 now"):
        check_settings(older, {"seed": 0, "hard_images": 0.1}, path)
    with pytest.raises(ResumeError, match="feature_norm: 'none' then, 'standardize' now"):
        check_settings(older, {"seed": 0, "feature_norm": "standardize", "map_sigma": 4.0}, path)
    with pytest.raises(ResumeError, match=r"map_sigma: 4\.0 then, 8\.0 now"):
        check_settings(older, {"seed": 0, "feature_norm": "none", "map_sigma": 8.0}, path)
