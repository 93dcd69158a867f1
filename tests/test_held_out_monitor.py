"""The held-out monitor: after every epoch the held-out good images are scored with the weights that would be
exported then, without touching the training; a late jump of that score warns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train import trainer
from train.checkpoint import build_graph_from_checkpoint
from train.trainer import LateJumpWarning, held_out_score, late_jump, score_images
from train.weight_average import WeightAverage


def test_late_jump_names_the_last_and_the_best_epoch_and_ignores_unrecorded_ones():
    assert late_jump([]) is None and late_jump([0.4]) is None and late_jump([None, None, 0.9]) is None
    assert late_jump([2.0, 0.6, 0.5, 0.55]) is None  # the usual: falls, then wobbles
    assert late_jump([0.9, 0.5, 0.74]) is None  # 1.48x: under the factor
    message = late_jump([None, 2.0, 0.5, 0.52, 1.5])
    assert message is not None
    assert "1.5 (median) with the weights of the last epoch (5), 3.0x the 0.5 of epoch 3" in message
    assert "--weight-average" in message
    assert late_jump([0.5, 0.9], factor=2.0) is None and late_jump([0.5, 0.9], factor=1.2) is not None


def test_scoring_the_held_out_images_leaves_the_training_untouched_and_scores_the_average_when_kept(tiny_run):
    """A trained bottle model in training mode, with a moving average that differs from its weights: the score is
    the median of the exported graph's image scores, with the average's weights where one is given; afterwards the
    weights are the same to the bit, every module is in the mode it was, and no random number was drawn."""
    from sdk.datasets import load_model_dataset, load_prepared

    graph, metadata = build_graph_from_checkpoint(tiny_run[0])
    images = load_prepared(load_model_dataset(metadata, model_path=tiny_run[1].path).validation, metadata.image_size,
                           progress=False)
    reference, _ = build_graph_from_checkpoint(tiny_run[0])
    plain = float(np.median(score_images(reference, images)[1]))

    average = WeightAverage(graph.net, decay=0.9)
    with torch.no_grad():
        for name, tensor in average.average.items():
            if tensor.is_floating_point() and not name.endswith(("running_mean", "running_var")):
                tensor.mul_(1.05)
    average.copy_to(reference.net)
    averaged = float(np.median(score_images(reference, images)[1]))
    assert abs(averaged - plain) > 1e-4  # the two weight sets score differently: the test can tell them apart

    graph.train()
    weights = {name: tensor.clone() for name, tensor in graph.net.state_dict().items()}
    modes = {name: module.training for name, module in graph.named_modules()}
    assert any(modes.values()) and not all(modes.values())  # the student trains, the teacher stays in eval mode
    rng = torch.get_rng_state()

    assert held_out_score(graph, images) == pytest.approx(plain, abs=1e-6)
    assert held_out_score(graph, images, average) == pytest.approx(averaged, abs=1e-6)
    assert all(torch.equal(graph.net.state_dict()[name], tensor) for name, tensor in weights.items())
    assert {name: module.training for name, module in graph.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_run_records_the_held_out_score_of_every_epoch_and_warns_of_a_late_jump(bottle_subset, tmp_path,
                                                                                   monkeypatch):
    """Real bottle images, RD4AD, 3 epochs: one held-out score per epoch, the last one the median of the scores the
    threshold was calibrated on (the same weights, the same images); with the warning's factor set to 0 the run's
    own history counts as a jump and the warning names the checkpoint."""
    from train.checkpoint import load_checkpoint
    from train.config import TrainConfig

    monkeypatch.setattr(trainer, "LATE_JUMP_FACTOR", 0.0)
    config = TrainConfig(data=str(bottle_subset), out=str(tmp_path / "run"), epochs=3, image_size=64, batch_size=8,
                         max_train_images=16, seed=0)
    with pytest.warns(LateJumpWarning, match=r"checkpoint\.pt: held-out good images score .* of epoch [12]"):
        trainer.train(config, progress=False)
    training = load_checkpoint(config.out)[0].training
    history = training["held_out_score_history"]
    assert len(history) == 3 and all(isinstance(v, float) and v > 0 for v in history)
    assert history[-1] == pytest.approx(float(np.median(training["validation_scores"])), abs=2e-6)
