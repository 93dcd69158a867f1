"""The weights' moving average (``--weight-average``): its arithmetic, and a real training run exporting it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.trainer import LAST_STEP_DIR, TrainError, TrainingStep, train
from train.weight_average import WeightAverage


def small_net() -> nn.Module:
    """A frozen ``teacher`` and a student with batch-norm (float running statistics, an integer counter)."""
    torch.manual_seed(0)
    return nn.ModuleDict({"teacher": nn.Linear(3, 3), "student": nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))})


def test_the_average_follows_the_warmed_up_exponential_rule_and_leaves_the_teacher_alone():
    net = small_net()
    average = WeightAverage(net, decay=0.5)
    assert not any(name.startswith("teacher.") for name in average.average)
    expected = net.state_dict()["student.0.weight"].clone()
    for n, value in enumerate((1.0, -2.0, 4.0), start=1):
        with torch.no_grad():
            net["student"][0].weight.fill_(value)
        net["student"](torch.randn(4, 3))  # training mode: moves the running statistics, counts a batch
        average.update(net)
        decay = min(0.5, (1 + n) / (10 + n))  # 2/11, 3/12, then 0.5
        expected = decay * expected + (1 - decay) * value
    torch.testing.assert_close(average.average["student.0.weight"], expected)
    assert int(average.average["student.1.num_batches_tracked"]) == 3  # copied, not averaged

    teacher_before = net["teacher"].weight.clone()
    average.copy_to(net)
    torch.testing.assert_close(net["student"][0].weight, expected)
    assert torch.equal(net["teacher"].weight, teacher_before)

    resumed = WeightAverage(small_net(), decay=0.5)
    resumed.load_state_dict(average.state_dict())
    assert resumed.updates == 3
    assert all(torch.equal(resumed.average[k], v) for k, v in average.average.items())
    with pytest.raises(ValueError, match="not of this network"):
        WeightAverage(nn.ModuleDict({"student": nn.Linear(3, 2)}), 0.5).load_state_dict(average.state_dict())
    for decay in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"in \(0, 1\)"):
            WeightAverage(net, decay)


def test_a_run_with_weight_average_exports_the_average_of_its_steps_not_the_last_step(bottle_subset: Path,
                                                                                      tmp_path: Path, monkeypatch):
    """Real bottle images, RD4AD, 6 optimiser steps: the checkpoint's student weights are the warmed-up moving
    average (decay 0.9) of the weights after each step, computed here from the recorded steps; the last step's
    weights differ from it; the teacher is the pretrained one; the setting is recorded; a decay outside [0, 1) is
    refused before training."""
    snapshots: list[dict[str, torch.Tensor]] = []
    step = TrainingStep.__call__

    def recorded(self, *args, **kwargs):
        if not snapshots:
            snapshots.append({k: v.clone() for k, v in self.graph.net.state_dict().items()})  # the initial weights
        loss = step(self, *args, **kwargs)  # RD4AD: one optimiser step per call
        snapshots.append({k: v.clone() for k, v in self.graph.net.state_dict().items()})
        return loss

    monkeypatch.setattr(TrainingStep, "__call__", recorded)
    config = TrainConfig(data=str(bottle_subset), out=str(tmp_path / "run"), epochs=3, image_size=64, batch_size=8,
                         max_train_images=16, seed=0, weight_average=0.9)
    train(config, progress=False)
    metadata, state = load_checkpoint(config.out)
    assert metadata.training["weight_average"] == 0.9 and len(snapshots) == 7

    student = [k for k in state if not k.startswith("teacher.") and state[k].is_floating_point()]
    assert student and len(student) == len([k for k in snapshots[0] if not k.startswith("teacher.")
                                            and snapshots[0][k].is_floating_point()])
    for name in student:  # weights and batch-norm running statistics alike
        expected = snapshots[0][name]
        for n, weights in enumerate(snapshots[1:], start=1):
            decay = min(0.9, (1 + n) / (10 + n))
            expected = decay * expected + (1 - decay) * weights[name]
        torch.testing.assert_close(state[name], expected, msg=name)
    assert not all(torch.allclose(state[name], snapshots[-1][name]) for name in student)
    assert all(torch.equal(state[k], snapshots[-1][k]) for k in state if k.startswith("teacher."))

    # The same training's last step is kept as a run of its own, calibrated on the same held-out images.
    last_metadata, last_state = load_checkpoint(Path(config.out) / LAST_STEP_DIR)
    assert all(torch.equal(last_state[k], snapshots[-1][k]) for k in last_state)
    assert last_metadata.training["weight_average"] == 0.0
    assert last_metadata.training["last_step_of"] == str(Path(config.out).resolve())
    assert last_metadata.training["loss_history"] == metadata.training["loss_history"]
    assert "held_out_score_history" not in last_metadata.training  # the monitor scored the average's weights
    assert last_metadata.training["validation_scores"] != metadata.training["validation_scores"]
    assert last_metadata.calibration.threshold != metadata.calibration.threshold

    for decay in (1.0, -0.5):
        with pytest.raises(TrainError, match=r"weight_average must be in \[0, 1\)"):
            train(TrainConfig(data=str(bottle_subset), out=str(tmp_path / "bad"), weight_average=decay),
                  progress=False)


def test_the_last_steps_run_exports_through_the_cli_and_a_later_run_without_average_removes_it(
        bottle_subset: Path, tmp_path: Path, capsys):
    """Real bottle images through ``rdedge train --weight-average``: the command names the last step's run, which
    ``rdedge export`` exports like any run; retraining the folder without an average removes that now stale run."""
    from rdedge.main import main

    run = tmp_path / "run"
    common = ["--data", str(bottle_subset), "--out", str(run), "--epochs", "2", "--image-size", "64",
              "--batch-size", "8", "--max-train-images", "12", "--quiet"]
    assert main(["train", *common, "--weight-average", "0.9"]) == 0
    last_step = run / LAST_STEP_DIR
    assert (f"the last step's, calibrated alike, are in {last_step} (rdedge export {last_step} to compare)"
            in capsys.readouterr().out)
    assert main(["export", str(last_step), "--check-images", "2", "--quiet"]) == 0
    assert (last_step / "model.onnx").is_file() and not (run / "model.onnx").exists()

    assert main(["train", *common]) == 0
    assert not last_step.exists() and "last step" not in capsys.readouterr().out
    assert load_checkpoint(run)[0].training["weight_average"] == 0.0
