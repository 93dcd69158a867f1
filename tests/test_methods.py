"""RD++, DRD and REASON: official parameter counts, pseudo-anomaly generators on real images, losses that train,
the in-graph DRD refinement against its NumPy formula, and export + Detector for every method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from export.reference import refined_scores
from sdk.datasets import load_dataset, load_prepared
from train.backbones import build_teacher, get_teacher_spec
from train.components.anomaly_map import AnomalyMapHead, cosine_distance_map
from train.graph import DetectorGraph
from train.methods import METHODS, get_method
from train.methods.base import unit_images
from train.methods.drd.synthesis import cut_paste, similarity_target
from train.methods.rdpp.ot import sinkhorn_divergence
from train.methods.rdpp.synthesis import SimplexNoiseAnomaly
from train.methods.reason.noise import inject_latent_noise


def n_params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


# Official counts (../shared/research/methods.md §1.5). REASON's ResNet-18 OCE has 3 basic blocks: the 2-block OCE
# (11,015,168) plus one 512→512 basic block (2 · 512·512·9 conv weights + 2 · 1,024 BN) = 15,735,808.
OFFICIAL = {
    ("wide_resnet50_2", "rdpp"): (15_486_912, 10_621_952, 48_263_168, 24_917_504),
    ("wide_resnet50_2", "drd"): (0, 48_372_736, 41_971_712, 24_917_504),
    ("wide_resnet50_2", "reason"): (15_486_912, 10_621_952, 48_263_168, 24_917_504),
    ("resnet18", "rdpp"): (968_688, 664_832, 11_015_168, 3_703_168),
    ("resnet18", "drd"): (0, 3_024_640, 8_393_728, 3_703_168),
    ("resnet18", "reason"): (968_688, 664_832, 15_735_808, 3_703_168),
}


@pytest.mark.parametrize(("backbone", "method"), sorted(OFFICIAL))
def test_parameter_counts_equal_official(backbone: str, method: str):
    net = get_method(method).build(get_teacher_spec(backbone), build_teacher(backbone, pretrained=False))
    counts = (n_params(net.projection), n_params(net.bottleneck.fusion), n_params(net.bottleneck.embedding),
              n_params(net.decoder))
    assert counts == OFFICIAL[(backbone, method)]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_every_method_keeps_teacher_shapes(method: str, backbone: str):
    spec = get_teacher_spec(backbone)
    net = get_method(method).build(spec, build_teacher(backbone, pretrained=False)).eval()
    with torch.no_grad():
        teacher, student = net(torch.randn(2, 3, 128, 128))
    assert [s.shape for s in student] == [t.shape for t in teacher]
    assert [t.shape[1] for t in teacher] == list(spec.channels)


@pytest.fixture(scope="module")
def real_batch(bottle_subset: Path) -> torch.Tensor:
    """Four real bottle training images at 128 px, uint8 NHWC."""
    ds = load_dataset(str(bottle_subset))
    return torch.from_numpy(load_prepared(ds.train[:4], 128, progress=False))


def test_simplex_noise_lands_only_in_its_box(real_batch):
    images = unit_images(real_batch)
    noisy, masks = SimplexNoiseAnomaly(128, seed=0)(images, np.random.default_rng(0))
    changed = (noisy - images).abs().amax(dim=1) > 0
    assert masks.any(dim=(1, 2)).all()
    assert not changed[~masks].any()  # nothing changes outside the box
    assert changed[masks].float().mean() > 0.9  # noise is non-zero almost everywhere inside it
    side = masks.sum(dim=(1, 2)).sqrt()
    assert (side >= 5).all() and (side <= 16).all()  # 10..31 px at 256, scaled to 128


def test_cut_paste_changes_the_pasted_region_and_target_follows(real_batch):
    images = unit_images(real_batch)
    pseudo, pasted = cut_paste(images, np.random.default_rng(3))
    changed = (pseudo - images).abs().amax(dim=1) > 0
    assert pasted.any(dim=(1, 2)).all()
    assert not changed[~pasted].any()
    assert changed[pasted].float().mean() > 0.5
    mean, std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    target = similarity_target((pseudo - mean) / std, (images - mean) / std)
    assert target[~pasted].abs().max() < 1e-6  # zero where nothing changed
    assert target[pasted].mean() > 0


def test_drd_difference_target_sees_patches_on_grey_parts_where_the_papers_cosine_is_blind(kolektor_subset: Path):
    """On real grey KolektorSDD strips, the paper's RGB-cosine target is ~0 inside pasted patches (a pasted patch
    changes intensity, not colour), so DRD's segmentation loss learns nothing there; the ``difference`` target
    (``--method-option segmentation_target=difference``) is clearly positive inside and exactly 0 outside."""
    from train.graph import InputNormalizer
    from train.methods.drd.synthesis import segmentation_target

    images = unit_images(torch.from_numpy(load_prepared(load_dataset(str(kolektor_subset)).train[:8], "160x64",
                                                        progress=False)))
    pseudo, pasted = cut_paste(images, np.random.default_rng(0))
    normalize = InputNormalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).from_unit
    cosine = segmentation_target("cosine", normalize(pseudo), normalize(images))
    difference = segmentation_target("difference", normalize(pseudo), normalize(images))
    changed = pasted & ((pseudo - images).abs().amax(dim=1) > 0.02)
    assert float(cosine[changed].mean()) < 0.02  # blind on grey
    assert float(difference[changed].mean()) > 0.2 and float(difference[~pasted].abs().max()) == 0.0
    assert float(difference.max()) <= 2.0
    assert get_method("drd", segmentation_target="difference").options["segmentation_target"] == "difference"
    with pytest.raises(ValueError, match="segmentation_target"):
        get_method("drd", segmentation_target="mask")


def test_reason_noise_scale_is_an_option():
    stem = torch.rand(6, 16, 32, 32)
    generator = torch.Generator().manual_seed(0)
    weak = inject_latent_noise(stem, generator)[0] - stem
    strong = inject_latent_noise(stem, torch.Generator().manual_seed(0), std=0.05)[0] - stem
    torch.testing.assert_close(strong, weak * (0.05 / 0.015))  # same draws, scaled
    method = get_method("reason", noise_std=0.05)
    assert method.noise_std == 0.05 and method.options["noise_std"] == 0.05
    assert get_method("reason").noise_std == 0.015  # the paper's
    with pytest.raises(ValueError, match="noise_std"):
        get_method("reason", noise_std=0)


def test_latent_noise_touches_half_the_batch_inside_one_patch():
    stem = torch.rand(6, 16, 32, 32)
    noisy, selected = inject_latent_noise(stem, torch.Generator().manual_seed(0))
    assert int(selected.sum()) == 3
    diff = (noisy - stem).abs().amax(dim=1)
    assert not diff[~selected].any()
    touched = diff[selected] > 0
    assert touched.any(dim=(1, 2)).all()
    assert torch.equal(touched[0], touched[1])  # one shared location
    assert float((noisy - stem).std()) < 0.015


def test_pairwise_ot_is_zero_for_identical_clouds_and_positive_otherwise():
    x = torch.nn.functional.normalize(torch.rand(3, 16, 8), dim=2)
    assert sinkhorn_divergence(x, x).abs().max() < 1e-5
    y = torch.nn.functional.normalize(torch.rand(3, 16, 8) + torch.linspace(0, 2, 8), dim=2)
    assert (sinkhorn_divergence(x, y) > 1e-3).all()


@pytest.fixture(scope="module")
def small_batch(bottle_subset: Path) -> torch.Tensor:
    """Four real bottle training images at 64 px (loss tests run many steps)."""
    ds = load_dataset(str(bottle_subset))
    return torch.from_numpy(load_prepared(ds.train[4:8], 64, progress=False))


class CpuTensorsMade(TorchDispatchMode):
    """Records every operator that returns a CPU tensor of one or more dimensions (0-d host numbers are allowed)."""

    def __init__(self) -> None:
        super().__init__()
        self.operators: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in torch.utils._pytree.tree_leaves(out):
            if isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dim() > 0:
                self.operators.append(str(func))
        return out


@pytest.mark.parametrize("method_name", ["rd4ad", "rdpp", "drd", "reason"])
def test_a_training_step_makes_every_tensor_on_the_models_device(method_name: str, small_batch):
    """One real training step with the network on PyTorch's ``meta`` device (shapes and devices, no data), the CPU
    stand-in for a GPU: a CPU tensor meeting the model's tensors fails outright, as it would on CUDA, and no operator
    of a step may make a CPU tensor (noise, masks, cut-paste, permutations; 0-d host numbers aside). Meta has no
    random generator of its own, so a CUDA generator's device is left to the `gpu` tests."""
    method = get_method(method_name)
    net = method.build(get_teacher_spec("efficientnet_lite0"), build_teacher("efficientnet_lite0", pretrained=False))
    graph = DetectorGraph(net, small_batch.shape[1], **method.graph_options()).to("meta")
    method.setup(0, device="meta")
    net.train()
    batch = small_batch.to("meta")
    first = method.training_step(net, batch, graph)  # may build per-run constants (RD++'s noise field) once
    with CpuTensorsMade() as made:
        out = method.training_step(net, batch, graph)
    assert first["loss"].device.type == out["loss"].device.type == "meta" and out["loss"].shape == ()
    assert not made.operators, f"{method_name} made CPU tensors: {sorted(set(made.operators))}"


def test_rd4ad_hard_mining_on_the_meta_device_makes_no_cpu_tensor(small_batch):
    """The hard-mining option's mask and threshold stay on the model's device (see the test above)."""
    method = get_method("rd4ad", hard_mining=0.9)
    net = method.build(get_teacher_spec("efficientnet_lite0"), build_teacher("efficientnet_lite0", pretrained=False))
    graph = DetectorGraph(net, small_batch.shape[1], **method.graph_options()).to("meta")
    method.setup(0, device="meta")
    with CpuTensorsMade() as made:
        out = method.training_step(net.train(), small_batch.to("meta"), graph)
    assert out["loss"].device.type == "meta" and not made.operators, sorted(set(made.operators))


def test_rd4ad_pixel_kd_loss_is_the_mean_per_position_distance_the_anomaly_map_reads(small_batch):
    """On real images through the Lite0 teacher and a fresh student: ``kd_loss="pixel"`` is the sum over scales of
    the mean of 1 − cos over channels at each position (the papers' equation, and what the exported map computes
    per position), while the default stays the code's flattened cosine; the two differ, and so do their gradients."""
    from train.losses import flattened_cosine_loss

    torch.manual_seed(0)
    flattened, pixel = get_method("rd4ad"), get_method("rd4ad", kd_loss="pixel")
    assert flattened.options == {} and pixel.options == {"kd_loss": "pixel"}
    net = flattened.build(get_teacher_spec("efficientnet_lite0"), build_teacher("efficientnet_lite0")).train()
    graph = DetectorGraph(net, small_batch.shape[1], **flattened.graph_options())
    with torch.no_grad():
        teacher, student = net(graph.normalize(small_batch))
    per_position = sum(float((1 - torch.nn.functional.cosine_similarity(t, s, dim=1)).mean())
                       for t, s in zip(teacher, student, strict=True))
    whole = sum(float(flattened_cosine_loss(t, s)) for t, s in zip(teacher, student, strict=True))

    grads = []
    for method, expected in ((flattened, whole), (pixel, per_position)):
        net.zero_grad()
        loss = method.training_step(net, small_batch, graph)["loss"]
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.student_parameters()]))
    assert per_position != pytest.approx(whole, rel=1e-3)
    assert not torch.allclose(grads[0], grads[1])


def test_hard_mining_keeps_the_loss_and_damps_the_gradient_where_the_student_matches_best(small_batch):
    """On real images through the Lite0 teacher and a fresh student: the option leaves RD4AD's loss value exactly as
    the paper's, multiplies the gradient by 0.1 at the 90 % of positions with the smallest teacher-student cosine
    distance and keeps it whole at the rest, and so changes the parameters' gradients."""
    from train.losses import HARD_MINING_FACTOR, flattened_cosine_loss, hard_mined

    torch.manual_seed(0)
    plain, mined = get_method("rd4ad"), get_method("rd4ad", hard_mining=0.9)
    net = plain.build(get_teacher_spec("efficientnet_lite0"), build_teacher("efficientnet_lite0")).train()
    graph = DetectorGraph(net, small_batch.shape[1], **plain.graph_options())

    with torch.no_grad():
        teacher, student = net(graph.normalize(small_batch))
    t, s = teacher[1], student[1].clone().requires_grad_(True)
    reference = s.detach().clone().requires_grad_(True)
    flattened_cosine_loss(t, hard_mined(t, s, 0.9)).backward()
    flattened_cosine_loss(t, reference).backward()
    ratio = (s.grad / reference.grad).mean(dim=1)  # (N, H, W): the same factor on every channel of a position
    distance = 1 - torch.nn.functional.cosine_similarity(t, s.detach(), dim=1)
    damped = torch.isclose(ratio, torch.tensor(HARD_MINING_FACTOR), atol=1e-4)
    whole = torch.isclose(ratio, torch.tensor(1.0), atol=1e-4)
    assert bool((damped | whole).all())
    assert abs(damped.float().mean().item() - 0.9) < 0.01
    assert distance[damped].max() <= distance[whole].min()  # the damped ones are the best restored
    assert torch.equal(hard_mined(t, s, 0.0), s)

    grads = []
    for method in (plain, mined):
        net.zero_grad()
        loss = method.training_step(net, small_batch, graph)["loss"]
        loss.backward()
        grads.append((float(loss), torch.cat([p.grad.flatten() for p in net.student_parameters()])))
    assert grads[0][0] == grads[1][0]  # the same loss value
    assert not torch.allclose(grads[0][1], grads[1][1])  # a different update


def run_steps(method_name: str, batch: torch.Tensor, key: str, steps: int) -> list[dict[str, float]]:
    """Train a fresh Lite0 model on one real batch for ``steps`` steps, back-propagating ``out[key]``."""
    torch.manual_seed(0)
    method = get_method(method_name)
    net = method.build(get_teacher_spec("efficientnet_lite0"), build_teacher("efficientnet_lite0"))
    graph = DetectorGraph(net, batch.shape[1], **method.graph_options())
    optimizers = method.optimizers(net, method.default_lr)
    net.train()
    history = []
    for _ in range(steps):
        method.setup(0)  # the same pseudo-anomalies at every step: a fixed problem whose losses must go down
        out = method.training_step(net, batch, graph)
        out[key].backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        history.append({k: float(v.detach()) for k, v in out.items()})
    return history


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_total_and_distillation_losses_decrease_over_real_training_steps(method_name: str, small_batch):
    history = run_steps(method_name, small_batch, "loss", 10)
    for key in ("loss", "kd") if "kd" in history[0] else ("loss",):
        first, last = history[0][key], np.mean([h[key] for h in history[-2:]])
        assert last < first, f"{method_name}: {key} went from {first:.4f} to {last:.4f}"


AUXILIARY = [("rdpp", "ssot"), ("rdpp", "recon"), ("rdpp", "contrast"), ("drd", "rec"), ("drd", "seg"),
             ("reason", "supp")]


@pytest.mark.parametrize(("method_name", "key"), AUXILIARY)
def test_each_auxiliary_loss_decreases_when_trained(method_name: str, key: str, small_batch):
    """Each extra term reaches trainable parameters: optimising it alone on real images lowers it."""
    history = run_steps(method_name, small_batch, key, 6)
    first, last = history[0][key], history[-1][key]
    if first == 0.0:  # a hinge already satisfied (contrast): it must stay satisfied
        assert last == 0.0
    else:
        assert last < first, f"{method_name}: {key} went from {first:.4f} to {last:.4f}"


def test_refinement_in_graph_equals_numpy_formula_per_sample():
    head = AnomalyMapHead(64, combine="mean", refinement=True)
    teacher = [torch.rand(3, 8, s, s) for s in (16, 8, 4)]  # strides 4, 8, 16 of a 64 x 64 input
    # sample i: scale i is a slightly perturbed copy of the teacher (small, flat distance), the others are random
    student = [torch.rand_like(t) for t in teacher]
    for i in range(3):
        student[i][i] = teacher[i][i] * (1 + 0.1 * torch.rand_like(teacher[i][i]))
    maps, scores = head(teacher, student)
    distances = [cosine_distance_map(t, s).numpy().astype(np.float64) for t, s in zip(teacher, student, strict=True)]
    upsampled = [head.upsample(torch.from_numpy(d)).numpy() for d in distances]
    expected = refined_scores(distances, upsampled, maps.numpy().reshape(3, -1).max(axis=1))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)
    variances = np.stack([u.reshape(3, -1).var(axis=1, ddof=1) for u in upsampled], axis=1)
    assert sorted(variances.argmin(axis=1).tolist()) == [0, 1, 2]  # the three samples chose three scales
    plain = AnomalyMapHead(64, combine="mean")(teacher, student)[1]
    assert (scores > plain).all()


@pytest.fixture(scope="module", params=["rdpp", "drd", "reason"])
def method_run(request, bottle_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Each newer method trained for 1 epoch on 16 real images at 128 px with its paper's head (all three scales,
    maximum; DRD refined), then exported."""
    from export.onnx import export_onnx
    from train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp(request.param)
    config = TrainConfig(data=str(bottle_subset), out=str(out), method=request.param, epochs=1, image_size=128,
                         batch_size=8, max_train_images=16, image_score="max", map_strides=(4, 8, 16),
                         bn_freeze=0.0)  # the papers' training: two steps leave the running statistics unsettled
    train(config, progress=False)
    return request.param, out, export_onnx(out, check_images=4)


def test_every_method_exports_with_parity_and_runs_in_the_detector(method_run, bottle_images):
    from sdk import Detector

    method, _, report = method_run
    for key in ("onnxruntime_vs_torch_map", "onnxruntime_vs_torch_score", "onnxruntime_vs_reference_map",
                "onnxruntime_vs_reference_score"):
        assert report.checks[key] <= 1e-4, key
    det = Detector(report.path)
    assert det.metadata.method == method
    results = det.predict_batch(list(bottle_images.values()))
    assert all(np.isfinite(r.score) and r.anomaly_map.shape == (128, 128) for r in results)
    if method == "drd":
        assert det.metadata.graph_options == {"combine": "mean", "refinement": True, "image_score": "max",
                                              "top_fraction": 0.001, "map_strides": [4, 8, 16], "sigma": 4.0,
                                              "feature_pool": 1}
        assert all(r.score > float(r.anomaly_map.max()) for r in results)  # (1 + v) · max


def test_every_method_exports_int8_that_the_cpu_rewrite_runs_unchanged(method_run, tmp_path: Path, monkeypatch):
    """INT8 export of each method: symmetric, and the SDK's CPU rewrite computes exactly what the file says.

    Which layers the gate keeps FP32 on these few-step, 128-px models is not what this test is about (the gate has its
    own tests): its good-score criterion is lifted, and it runs in ONNX Runtime only, so that every method's graph
    keeps its INT8 patterns to fold."""
    import functools
    import math

    from export import int8_layers
    from export.onnx import export_onnx
    from export.tensorrt import count_nonzero_zero_points
    from sdk import Detector
    from sdk.datasets import load_model_dataset
    from tests.int8_checks import rewrite_exactly

    monkeypatch.setattr(int8_layers, "choose_fp32_layers",
                        functools.partial(int8_layers.choose_fp32_layers, max_good_score_noise=math.inf,
                                          runtimes=["onnxruntime"]))
    method, run, _ = method_run
    report = export_onnx(run, tmp_path / "int8.onnx", precision="int8", check_images=2, calib_images=8)
    assert count_nonzero_zero_points(report.path) == 0
    assert report.checks["reduced_precision"]["map_correlation_vs_fp32"] >= 0.9, method
    test = load_model_dataset(report.metadata, model_path=run / "checkpoint.pt").test  # its run's train_log
    samples = [next(t for t in test if t.defect == "good"), next(t for t in test if t.defect != "good")]
    _, rewrite = rewrite_exactly(report.path, load_prepared(samples, 128, progress=False))
    assert rewrite.activations_folded > 0 and rewrite.pairs_unsigned > 0, method
    assert Detector(report.path).backend.cpu_int8_rewrite == rewrite


@pytest.mark.parametrize("method_run", ["drd"], indirect=True)
def test_drd_ablation_export_recalibrates_on_held_out_images(method_run, tmp_path: Path):
    from export.onnx import export_onnx
    from sdk import Detector

    _, run, report = method_run
    plain = export_onnx(run, tmp_path / "plain.onnx", check_images=2, graph_overrides={"refinement": False})
    assert plain.metadata.graph_options["refinement"] is False
    assert plain.metadata.calibration.threshold < report.metadata.calibration.threshold
    assert plain.metadata.calibration.n_images == report.metadata.calibration.n_images
    det = Detector(plain.path)
    result = det(np.full((128, 128, 3), 90, np.uint8))
    assert result.score == pytest.approx(float(result.anomaly_map.max()), rel=1e-6)


@pytest.mark.parametrize("method_run", ["drd"], indirect=True)
def test_drd_has_its_own_pixel_threshold_on_the_maps_scale(method_run, bottle_subset: Path):
    """Defect: DRD's threshold was calibrated on the refined score max·(1+v) but applied to raw map pixels, so masks
    were judged on the wrong scale (here: empty on every test image, flagged or not). The pixel threshold is
    calibrated on the held-out good images' map maxima (the exported graph's own outputs), apart from the image
    threshold."""
    from sdk import Detector
    from sdk.datasets import load_dataset, load_prepared
    from sdk.metadata import ScoreCalibration

    det = Detector(method_run[2].path)
    calibration = det.metadata.calibration
    assert calibration.pixel_threshold < calibration.threshold  # refined scores are larger than map maxima
    validation = load_dataset(str(bottle_subset), seed=0).validation
    results = det.predict_batch(list(load_prepared(validation, 128, progress=False)), rgb=True)
    again = ScoreCalibration.from_scores([r.score for r in results], calibration.sigmas,
                                         map_maxima=[r.anomaly_map.max() for r in results])
    assert again.threshold == pytest.approx(calibration.threshold, rel=1e-5)
    assert again.pixel_threshold == pytest.approx(calibration.pixel_threshold, rel=1e-5)
    assert calibration.map_max_mean <= calibration.pixel_threshold  # on the maps' own scale
    test = load_dataset(str(bottle_subset), seed=0).test
    maps = [r.anomaly_map for r in det.predict_batch([s.load_image() for s in test])]
    assert not any((m > calibration.threshold).any() for m in maps)  # the old rule: no pixel could ever be masked


@pytest.mark.parametrize("method_run", ["rdpp"], indirect=True)
def test_where_the_score_is_the_map_maximum_both_thresholds_agree(method_run):
    from sdk import Detector

    calibration = Detector(method_run[2].path).metadata.calibration
    assert calibration.pixel_threshold == pytest.approx(calibration.threshold, rel=1e-6)


def test_training_never_reads_test_images(bottle_subset: Path, tmp_path: Path, monkeypatch):
    from sdk import datasets
    from train.trainer import TrainConfig, train

    read: list[str] = []
    original = datasets.Sample.load_image
    monkeypatch.setattr(datasets.Sample, "load_image", lambda self: read.append(self.name) or original(self))
    train(TrainConfig(data=str(bottle_subset), out=str(tmp_path), method="reason", epochs=1, image_size=64,
                      batch_size=8, max_train_images=8), progress=False)
    assert read and all(name.startswith("train/good/") for name in read)


def test_method_options_are_validated():
    assert get_method("drd", refinement=False).graph_options()["refinement"] is False
    assert get_method("reason", suppression_target="teacher").suppression_target == "teacher"
    with pytest.raises(ValueError, match="suppression_target"):
        get_method("reason", suppression_target="student")
    with pytest.raises(ValueError, match="valid: hard_mining"):
        get_method("rd4ad", refinement=True)
    with pytest.raises(ValueError, match="hard_mining"):
        get_method("rd4ad", hard_mining=1.0)
    with pytest.raises(ValueError, match="kd_loss must be one of"):
        get_method("rd4ad", kd_loss="l2")


@pytest.mark.parametrize(("method", "valid"), [("drd", "refinement, segmentation_target"),
                                                ("reason", "suppression_target, noise_std"),
                                                ("rdpp", "none"), ("rd4ad", "hard_mining, kd_loss")])
def test_an_unknown_method_option_is_one_clear_error_listing_the_valid_ones(method, valid, capsys):
    """Defect: ``--method-option`` unknown to drd or reason ended in a TypeError traceback."""
    from rdedge.main import main

    code = main(["train", "--data", "elpv:mono", "--out", "unused", "--method", method, "--method-option",
                 "colour=red"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"method {method} has no option 'colour'; valid: {valid}" in err


def test_training_throughput_rows_time_the_trainers_step_on_the_cpu(small_batch):
    """The GPU check's training rows (benchmarks.training), run here on the CPU rows only: every method's step runs,
    its loss is finite and the table has one row per method and configuration."""
    from benchmarks.training import METHODS, markdown_rows, training_rows

    rows = training_rows(small_batch.numpy(), "efficientnet_lite0", cuda=False, steps=1)
    assert [r["method"] for r in rows] == list(METHODS) and all(r["device"] == "cpu" for r in rows)
    assert all(r["loss_finite"] and r["images_per_s"] > 0 and r["amp"] == "off" for r in rows)
    assert len(markdown_rows(rows)) == 2 + len(rows)
