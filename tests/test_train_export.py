"""Training writes an honest checkpoint; export writes one checked ONNX graph with the SDK's metadata."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.onnx import ExportCheckError, export_onnx
from sdk.contract import INPUT_NAME, METADATA_KEY, OUTPUT_MAP, OUTPUT_SCORE
from sdk.metadata import ModelMetadata
from train.checkpoint import CheckpointError, build_graph_from_checkpoint, load_checkpoint


def test_checkpoint_loads_with_weights_only_and_carries_metadata(tiny_run):
    run, _ = tiny_run
    payload = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert payload["format"] == "rdedge-checkpoint"
    meta = ModelMetadata.from_json(payload["metadata"])
    assert (meta.method, meta.backbone, meta.image_size) == ("rd4ad", "efficientnet_lite0", (128, 128))
    assert meta.input_mean == (0.5, 0.5, 0.5)
    cal = meta.calibration
    assert cal.n_images == 3 and cal.rule == "median_mad"
    assert cal.threshold == pytest.approx(cal.median + 3 * cal.scale)
    assert cal.minimum <= cal.median <= cal.maximum and cal.minimum <= cal.mean <= cal.maximum
    assert meta.training["n_train"] == 27 and meta.training["epochs"] == 3
    assert len(meta.weights_sha256) == 64
    assert any(k.startswith("teacher.") for k in payload["state_dict"])
    assert json.loads((run / "train_log.json").read_text())["method"] == "rd4ad"
    hardware = meta.training["hardware"]  # what a bit-for-bit comparison of two runs must match
    assert hardware["cpu"] and hardware["threads"] == torch.get_num_threads()
    assert hardware["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and "gpu" not in hardware


def test_training_loss_decreases_on_real_images(tiny_run):
    meta, _ = load_checkpoint(tiny_run[0])
    history = meta.training["loss_history"]
    assert history[-1] < history[0]


def test_calibration_reproduces_from_the_checkpoint(tiny_run):
    """The threshold was computed by the same graph that the checkpoint rebuilds."""
    from sdk.datasets import load_dataset, load_prepared, reference_images
    from sdk.metadata import ScoreCalibration
    from train.trainer import score_images

    graph, meta = build_graph_from_checkpoint(tiny_run[0])
    ds = load_dataset(meta.training["data"], seed=meta.training["seed"])
    _, scores = score_images(graph, load_prepared(ds.validation, meta.image_size, progress=False))
    assert ScoreCalibration.from_scores(scores).threshold == pytest.approx(meta.calibration.threshold, rel=1e-5)
    assert len(reference_images(meta, 2)) == 2


def test_tampered_checkpoint_is_refused(tiny_run, tmp_path: Path):
    payload = torch.load(tiny_run[0] / "checkpoint.pt", weights_only=True)
    key = next(k for k in payload["state_dict"] if k.startswith("decoder.") and k.endswith("weight"))
    payload["state_dict"][key] = payload["state_dict"][key] + 1.0
    torch.save(payload, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="hash"):
        build_graph_from_checkpoint(tmp_path)
    (tmp_path / "other").mkdir()
    torch.save({"hello": 1}, tmp_path / "other" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not an rdedge checkpoint"):
        load_checkpoint(tmp_path / "other")


def test_onnx_graph_signature_opset_and_metadata(tiny_onnx: Path):
    model = onnx.load(tiny_onnx)
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [128, 128, 3]
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert set(outputs) == {OUTPUT_MAP, OUTPUT_SCORE}
    assert all(t.elem_type == onnx.TensorProto.FLOAT for t in outputs.values())
    meta = ModelMetadata.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert meta.image_size == (128, 128) and meta.precision == "fp32"
    assert meta.checks["onnxruntime_vs_torch_map"] <= 1e-4
    assert meta.checks["onnxruntime_vs_torch_score"] <= 1e-4
    assert meta.checks["onnxruntime_vs_reference_map"] <= 1e-4
    assert meta.checks["onnxruntime_vs_reference_score"] <= 1e-4
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMul", "TopK", "ReduceMean"} <= ops and "If" not in ops  # matrix smoothing, the recipe's top-mean
    assert not any(n.op_type == "Resize" for n in model.graph.node if n.name.startswith("head/"))
    assert not any(n.op_type == "Loop" for n in model.graph.node)


def test_onnx_matches_pytorch_on_real_images_at_several_batch_sizes(tiny_run, bottle_images):
    import onnxruntime as ort

    from sdk.image import prepare_image

    run, report = tiny_run
    graph, _ = build_graph_from_checkpoint(run)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    images = np.stack([prepare_image(im, 128) for im in bottle_images.values()] * 2)
    for n in (1, 3, 4):
        maps, scores = session.run(None, {INPUT_NAME: images[:n]})
        with torch.no_grad():
            want_maps, want_scores = graph(torch.from_numpy(images[:n]))
        np.testing.assert_allclose(maps, want_maps.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(scores, want_scores.numpy(), rtol=1e-4)


def test_failed_self_check_writes_nothing(tiny_run, tmp_path: Path):
    target = tmp_path / "strict.onnx"
    with pytest.raises(ExportCheckError):
        export_onnx(tiny_run[0], target, check_images=2, tolerance=0.0)
    assert not target.exists()
    assert not list(tmp_path.iterdir())


def test_export_refuses_old_opsets_and_no_check(tiny_run):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_run[0], opset=13)
    with pytest.raises(ValueError, match="real images"):
        export_onnx(tiny_run[0], check_images=0)


def test_train_rejects_sizes_the_decoder_cannot_mirror(bottle_subset, tmp_path):
    from train.trainer import TrainConfig, train

    with pytest.raises(ValueError, match="multiple of 32"):
        train(TrainConfig(data=str(bottle_subset), out=str(tmp_path), image_size=100), progress=False)


def test_training_length_in_steps_runs_the_fewest_whole_epochs_that_make_them(bottle_subset: Path, tmp_path: Path,
                                                                              capsys):
    """``rdedge train --steps 5`` on 12 real images in batches of 8 (2 steps per epoch): 3 epochs, 6 steps, recorded
    in the model; ``--epochs`` with ``--steps`` is refused (one training length), by the command and by train()."""
    from rdedge.main import main
    from train.trainer import TrainConfig, train

    out = tmp_path / "steps"
    with pytest.raises(SystemExit) as refused:
        main(["train", "--data", str(bottle_subset), "--out", str(out), "--steps", "5", "--epochs", "50"])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="epochs or steps, not both"):
        train(TrainConfig(data=str(bottle_subset), out=str(out), epochs=50, steps=5), progress=False)
    assert main(["train", "--data", str(bottle_subset), "--out", str(out), "--steps", "5",
                 "--image-size", "64", "--batch-size", "8", "--max-train-images", "12", "--quiet"]) == 0
    assert "input size 64 (asked: 64); 3 epochs, 6 optimiser steps on 12 good images" in capsys.readouterr().out
    metadata, _ = load_checkpoint(out)
    assert metadata.training["epochs_run"] == 3 and metadata.training["optimiser_steps"] == 6
    assert len(metadata.training["loss_history"]) == 3 and metadata.training["steps"] == 5
    assert main(["train", "--data", str(bottle_subset), "--out", str(tmp_path / "zero"), "--steps", "0"]) == 2


def test_cosine_learning_rate_decays_over_the_runs_steps_and_constant_keeps_the_papers_rate(bottle_subset: Path,
                                                                                             tmp_path: Path,
                                                                                             monkeypatch, capsys):
    """``rdedge train --lr-schedule cosine`` on real images: each optimiser step runs at the half-cosine share of the
    base rate for its place in the run (3 epochs x 2 steps), recorded in the model; the default keeps 0.005 for
    every step (the papers'); an unknown schedule is refused by the command and by train()."""
    from rdedge.main import main
    from train.trainer import TrainConfig, TrainError, TrainingStep, lr_factor, train

    rates: list[float] = []
    step = TrainingStep.__call__

    def recorded(self, *args, **kwargs):
        rates.append(self.optimizers[0].param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(TrainingStep, "__call__", recorded)
    common = ["--data", str(bottle_subset), "--epochs", "3", "--image-size", "64", "--batch-size", "8",
              "--max-train-images", "12", "--bn-freeze", "0", "--quiet"]  # bn_freeze's steps run at a fifth
    assert main(["train", "--out", str(tmp_path / "cosine"), "--lr-schedule", "cosine", *common]) == 0
    expected = [0.005 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert rates[0] == 0.005 and rates[-1] < 0.0004
    assert load_checkpoint(tmp_path / "cosine")[0].training["lr_schedule"] == "cosine"

    rates.clear()
    assert main(["train", "--out", str(tmp_path / "constant"), *common]) == 0
    assert rates == [0.005] * 6
    assert load_checkpoint(tmp_path / "constant")[0].training["lr_schedule"] == "constant"

    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "x"), "--lr-schedule", "step", *common])
    assert "invalid choice: 'step'" in capsys.readouterr().err
    with pytest.raises(TrainError, match="unknown lr_schedule 'step'"):
        train(TrainConfig(data=str(bottle_subset), out=str(tmp_path / "y"), lr_schedule="step"), progress=False)
    with pytest.raises(ValueError, match="at least one step"):
        lr_factor("cosine", 0, 0)


def test_flip_augmentation_shows_the_student_mirrored_training_images_and_none_shows_them_as_they_are(
        bottle_subset: Path, tmp_path: Path, monkeypatch, capsys):
    """``rdedge train --augment flip`` on real images: every image of every step is a training image as it is,
    mirrored left-right, top-bottom or both, and all four occur; the same seed draws the same views; the default
    (``none``) feeds the images unchanged and draws nothing more from the shuffling generator, so runs without the
    option shuffle as before it existed; an unknown augmentation is refused by the command, train() and
    augment_batch()."""
    from rdedge.main import main
    from sdk.datasets import load_dataset, load_prepared
    from train.trainer import TrainConfig, TrainError, TrainingStep, augment_batch, train

    seen: list[torch.Tensor] = []
    step = TrainingStep.__call__

    def recorded(self, batch, *args, **kwargs):
        seen.append(batch.clone())
        return step(self, batch, *args, **kwargs)

    monkeypatch.setattr(TrainingStep, "__call__", recorded)
    common = ["--data", str(bottle_subset), "--epochs", "3", "--image-size", "64", "--batch-size", "8",
              "--max-train-images", "12", "--quiet"]
    training = load_prepared(load_dataset(str(bottle_subset), None, validation_fraction=0.1, seed=0).train[:12],
                             64, progress=False)
    originals = torch.from_numpy(training)

    def views(images: list[torch.Tensor]) -> set[str]:
        """Which view of a training image each image is (H, W, C: dim 1 mirrors, dim 0 turns upside down)."""
        names = set()
        for image in images:
            found = [name for o in originals for name, view in (("as is", o), ("mirrored", o.flip(1)),
                                                                 ("upside down", o.flip(0)),
                                                                 ("both", o.flip(0).flip(1)))
                     if torch.equal(image, view)]
            assert found, "a training batch holds an image that is no view of any training image"
            names.add(found[0])
        return names

    assert main(["train", "--out", str(tmp_path / "flip"), "--augment", "flip", *common]) == 0
    flipped = [image for batch in seen for image in batch]
    assert len(flipped) == 36 and views(flipped) == {"as is", "mirrored", "upside down", "both"}
    assert load_checkpoint(tmp_path / "flip")[0].training["augment"] == "flip"
    first_run = [b.clone() for b in seen]
    seen.clear()
    assert main(["train", "--out", str(tmp_path / "flip-again"), "--augment", "flip", *common]) == 0
    assert all(torch.equal(a, b) for a, b in zip(first_run, seen, strict=True))

    seen.clear()
    assert main(["train", "--out", str(tmp_path / "none"), *common]) == 0
    assert views([image for batch in seen for image in batch]) == {"as is"}
    assert load_checkpoint(tmp_path / "none")[0].training["augment"] == "none"
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    assert augment_batch(originals, "none", generator) is originals
    assert torch.equal(generator.get_state(), before)

    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "x"), "--augment", "rotate", *common])
    assert "invalid choice: 'rotate'" in capsys.readouterr().err
    with pytest.raises(TrainError, match="unknown augment 'rotate'"):
        train(TrainConfig(data=str(bottle_subset), out=str(tmp_path / "y"), augment="rotate"), progress=False)
    with pytest.raises(ValueError, match="unknown augment 'rotate'"):
        augment_batch(originals, "rotate", generator)


def test_hard_images_repeat_in_each_epoch_the_training_images_the_weights_of_that_moment_score_worst(
        bottle_subset: Path, tmp_path: Path, monkeypatch):
    """``rdedge train --hard-images 0.25`` on real images: the first epoch draws each of the 12 training images
    once; every later epoch draws 12 images among which are the 3 (a quarter) that the graph scored highest just
    before it, and no other image twice; some epoch repeats one; the same seed draws the same; the default scores
    no training image and draws each once per epoch, as one permutation of the shuffling generator; shares outside
    [0, 1) and scores that are not one per image are refused."""
    import train.trainer as trainer
    from rdedge.main import main
    from sdk.datasets import load_dataset, load_prepared
    from train.trainer import TrainConfig, TrainError, TrainingStep, epoch_order, train

    seen: list[torch.Tensor] = []
    scored: list[np.ndarray] = []
    step, score = TrainingStep.__call__, trainer.score_keeping_modes

    def recorded_step(self, batch, *args, **kwargs):
        seen.append(batch.clone())
        return step(self, batch, *args, **kwargs)

    def recorded_scores(graph, images):
        result = score(graph, images)
        if len(images) == 12:  # the training images (the held-out ones are 3)
            scored.append(result[1])
        return result

    monkeypatch.setattr(TrainingStep, "__call__", recorded_step)
    monkeypatch.setattr(trainer, "score_keeping_modes", recorded_scores)
    common = ["--data", str(bottle_subset), "--epochs", "4", "--image-size", "64", "--batch-size", "8",
              "--max-train-images", "12", "--quiet"]
    originals = torch.from_numpy(load_prepared(
        load_dataset(str(bottle_subset), None, validation_fraction=0.1, seed=0).train[:12], 64, progress=False))

    def drawn(batches: list[torch.Tensor]) -> np.ndarray:
        """How many times each training image was drawn."""
        counts = np.zeros(len(originals), dtype=int)
        for image in (image for batch in batches for image in batch):
            matches = [i for i, original in enumerate(originals) if torch.equal(image, original)]
            assert len(matches) == 1, "a training batch holds an image that is no training image"
            counts[matches[0]] += 1
        return counts

    assert main(["train", "--out", str(tmp_path / "hard"), "--hard-images", "0.25", *common]) == 0
    assert len(seen) == 8 and len(scored) == 3  # 2 steps per epoch; scored before epochs 2, 3 and 4
    assert drawn(seen[:2]).tolist() == [1] * 12
    repeated = 0
    for epoch, scores in enumerate(scored, start=1):
        counts = drawn(seen[2 * epoch: 2 * epoch + 2])
        hardest = set(np.argsort(-scores)[:3].tolist())
        assert counts.sum() == 12 and all(counts[i] >= 1 for i in hardest)
        assert all(counts[i] <= 1 for i in range(12) if i not in hardest)
        repeated += int((counts == 2).any())
    assert repeated >= 1
    assert load_checkpoint(tmp_path / "hard")[0].training["hard_images"] == 0.25
    first_run = [b.clone() for b in seen]
    seen.clear()
    assert main(["train", "--out", str(tmp_path / "hard-again"), "--hard-images", "0.25", *common]) == 0
    assert all(torch.equal(a, b) for a, b in zip(first_run, seen, strict=True))

    seen.clear()
    scored.clear()
    assert main(["train", "--out", str(tmp_path / "none"), *common]) == 0
    assert not scored
    for epoch in range(4):
        assert drawn(seen[2 * epoch: 2 * epoch + 2]).tolist() == [1] * 12
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(epoch_order(12, generator, 0.25, None), torch.randperm(12, generator=torch.Generator()
                                                                                 .manual_seed(3)))

    with pytest.raises(TrainError, match=r"hard_images must be in \[0, 1\)"):
        train(TrainConfig(data=str(bottle_subset), out=str(tmp_path / "y"), hard_images=1.0), progress=False)
    with pytest.raises(ValueError, match=r"hard_images must be in \[0, 1\)"):
        epoch_order(12, generator, -0.1, None)
    with pytest.raises(ValueError, match="one score per training image"):
        epoch_order(12, generator, 0.25, np.zeros(11))


def test_a_run_with_a_narrower_embedding_records_it_rebuilds_it_and_exports_it(bottle_subset: Path, tmp_path: Path,
                                                                                capsys):
    """``rdedge train --embedding-channels 32`` on real images: the checkpoint records the width, its φ has 32
    channels, it rebuilds strictly from the checkpoint, its ONNX export passes the parity check against the PyTorch
    graph and runs in the SDK; a width the student cannot have is refused before any training."""
    from rdedge.main import main
    from sdk import Detector

    common = ["--data", str(bottle_subset), "--epochs", "1", "--image-size", "64", "--batch-size", "8",
              "--max-train-images", "12", "--quiet"]
    out = tmp_path / "narrow"
    assert main(["train", "--out", str(out), "--embedding-channels", "32", *common]) == 0
    metadata, state = load_checkpoint(out)
    assert metadata.training["embedding_channels"] == 32
    assert state["bottleneck.embedding.stage.0.conv1.weight"].shape[0] == 32
    graph, _ = build_graph_from_checkpoint(out)
    assert graph.net.bottleneck.embedding.out_channels == 32
    report = export_onnx(out, check_images=4)
    with Detector(report.path, backend="onnxruntime") as detector:
        result = detector(next((bottle_subset / "test" / "broken_large").glob("*.png")))
    assert np.isfinite(result.score) and result.anomaly_map.shape == (64, 64)

    assert main(["train", "--out", str(tmp_path / "bad"), "--embedding-channels", "0", *common]) == 2
    assert "embedding_channels must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_bn_freeze_trains_the_last_steps_with_the_running_statistics_that_inference_uses(
        bottle_subset: Path, tmp_path: Path, monkeypatch):
    """``rdedge train --bn-freeze 0.5`` on real images, 2 epochs of one step each: the first step computes its loss
    with every student batch-norm layer in training mode, the second with every one in eval mode (the teacher's in
    eval mode at both), at a fifth of the learning rate with Adam's moments started afresh; the second step leaves
    the running statistics as the first left them, so they equal those of a 1-epoch run with the same seed while the
    weights moved on; with ``--bn-freeze 0`` (the papers') the second step updates them too, at the full rate with the
    moments kept. Which steps run frozen: the last share, at least one; shares outside [0, 1) are refused. The
    recipe's default is 0.1."""
    from rdedge.main import main
    from train.trainer import (
        FROZEN_BN_LR_FACTOR,
        TrainConfig,
        TrainError,
        TrainingStep,
        first_running_statistics_step,
        train,
    )

    modes: list[tuple[set[bool], set[bool]]] = []
    rates: list[tuple[float, bool]] = []
    step = TrainingStep.__call__

    def recorded_step(self, batch, *args, **kwargs):
        net = self.graph.net
        norms = [(name, m) for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
        modes.append(({m.training for name, m in norms if not name.startswith("teacher.")},
                      {m.training for name, m in norms if name.startswith("teacher.")}))
        rates.append((self.optimizers[0].param_groups[0]["lr"], not self.optimizers[0].state))
        return step(self, batch, *args, **kwargs)

    monkeypatch.setattr(TrainingStep, "__call__", recorded_step)
    common = ["--data", str(bottle_subset), "--image-size", "64", "--batch-size", "12", "--max-train-images", "12",
              "--quiet"]
    assert main(["train", "--out", str(tmp_path / "frozen"), "--epochs", "2", "--bn-freeze", "0.5", *common]) == 0
    assert modes == [({True}, {False}), ({False}, {False})]
    assert rates == [(0.005, True), (pytest.approx(0.005 * FROZEN_BN_LR_FACTOR), True)]
    modes.clear()
    rates.clear()
    assert main(["train", "--out", str(tmp_path / "one"), "--epochs", "1", "--bn-freeze", "0", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "batch"), "--epochs", "2", "--bn-freeze", "0", *common]) == 0
    assert modes == [({True}, {False})] * 3
    assert rates == [(0.005, True), (0.005, True), (0.005, False)]

    meta, frozen = load_checkpoint(tmp_path / "frozen")
    one, batch = load_checkpoint(tmp_path / "one")[1], load_checkpoint(tmp_path / "batch")[1]
    assert meta.training["bn_freeze"] == 0.5
    running = [k for k in frozen if not k.startswith("teacher.") and k.endswith(("running_mean", "running_var"))]
    weights = [k for k in frozen if not k.startswith("teacher.") and k.endswith(".weight")]
    assert running and weights
    assert all(torch.equal(frozen[k], one[k]) for k in running)
    assert not all(torch.equal(batch[k], one[k]) for k in running)
    assert not all(torch.equal(frozen[k], one[k]) for k in weights)

    assert TrainConfig(data="d", out="o").bn_freeze == 0.1
    assert first_running_statistics_step(1000, 0.1) == 900
    assert first_running_statistics_step(1008, 0.1) == 907
    assert first_running_statistics_step(10, 0.01) == 9
    assert first_running_statistics_step(10, 0.0) == 10
    with pytest.raises(ValueError, match=r"bn_freeze must be in \[0, 1\)"):
        first_running_statistics_step(10, 1.0)
    with pytest.raises(TrainError, match=r"bn_freeze must be in \[0, 1\)"):
        train(TrainConfig(data=str(bottle_subset), out=str(tmp_path / "y"), bn_freeze=-0.1), progress=False)
