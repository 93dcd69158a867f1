"""Teachers, bottleneck and decoder: shapes, official parameter counts, and honest weight loading."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from train.backbones import (
    TeacherWeightsMismatch,
    TeacherWeightsNotFound,
    build_lite_classifier,
    build_teacher,
    get_teacher_spec,
    lite_weights_file,
    map_lite_weights,
)
from train.methods import get_method


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Official RD4AD counts (../shared/research/methods.md §1.5; conv4/bn4, unused by the official forward, omitted).
OFFICIAL = {
    "wide_resnet50_2": {"teacher": 24_862_528, "fusion": 10_621_952, "oce": 48_263_168, "decoder": 24_917_504},
    "resnet18": {"fusion": 664_832, "oce": 11_015_168, "decoder": 3_703_168},
}


@pytest.mark.parametrize("backbone", ["wide_resnet50_2", "resnet18"])
def test_resnet_rd4ad_parameter_counts_equal_official(backbone: str):
    spec = get_teacher_spec(backbone)
    # pretrained=False: only the architecture is under test here (no weights file ships with PyPI).
    net = get_method("rd4ad").build(spec, build_teacher(backbone, pretrained=False))
    counts = {
        "teacher": n_params(net.teacher),
        "fusion": n_params(net.bottleneck.fusion),
        "oce": n_params(net.bottleneck.embedding),
        "decoder": n_params(net.decoder),
    }
    for key, value in OFFICIAL[backbone].items():
        assert counts[key] == value, key


@pytest.mark.parametrize(
    ("backbone", "channels", "embedding"),
    [("wide_resnet50_2", (256, 512, 1024), 2048), ("resnet18", (64, 128, 256), 512),
     ("efficientnet_lite0", (24, 40, 112), 224), ("efficientnet_lite1", (24, 40, 112), 224),
     ("efficientnet_lite2", (24, 48, 120), 240), ("efficientnet_lite0_stage3", (24, 40, 80), 160)],
)
def test_shapes_at_256(backbone: str, channels, embedding: int):
    spec = get_teacher_spec(backbone)
    net = get_method("rd4ad").build(spec, build_teacher(backbone, pretrained=False)).eval()
    with torch.no_grad():
        teacher = net.encode(torch.zeros(1, 3, 256, 256))
        phi = net.bottleneck(teacher)
        student = net.decoder(phi)
    assert phi.shape == (1, embedding, 8, 8)
    for t, s, c, side in zip(teacher, student, channels, (64, 32, 16), strict=True):
        assert t.shape == s.shape == (1, c, side, side)


def test_teacher_is_frozen_and_stays_in_eval_mode():
    net = get_method("rd4ad").build(get_teacher_spec("resnet18"), build_teacher("resnet18", pretrained=False))
    net.train()
    assert not net.teacher.training and net.decoder.training
    assert all(not p.requires_grad for p in net.teacher.parameters())
    assert not {id(p) for p in net.student_parameters()} & {id(p) for p in net.teacher.parameters()}


def test_missing_resnet_weights_fail_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(TeacherWeightsNotFound) as err:
        build_teacher("resnet18")
    text = str(err.value)
    assert "resnet18-f37072fd.pth" in text and str(tmp_path) in text and "--weights" in text
    with pytest.raises(TeacherWeightsNotFound, match="not found"):
        build_teacher("wide_resnet50_2", tmp_path / "nope.pth")


def test_resnet_weights_load_from_a_local_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-local.pth"
    torch.save(reference.state_dict(), path)
    teacher = build_teacher("resnet18", path)
    torch.testing.assert_close(teacher.conv1.weight, reference.conv1.weight)
    torch.save({"wrong": torch.zeros(1)}, path)
    with pytest.raises(TeacherWeightsMismatch):
        build_teacher("resnet18", path)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_imagenet_weights_classify_a_real_cat_photo(variant: int):
    """A wrong mapping still runs; only a real photo shows the weights are where they belong (Lite0/1/2, from their
    PyPI packages)."""
    import cv2
    from skimage import data

    net = build_lite_classifier(variant).eval()
    image = cv2.resize(data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = torch.from_numpy((image - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = net(x).softmax(1)[0]
    assert int(probs.argmax()) in range(281, 286)  # ImageNet cat classes (tabby ... Egyptian cat)
    assert float(probs.max()) > 0.5


def test_lite_mapping_rejects_a_shifted_state_dict_and_another_variants_file():
    source = torch.load(lite_weights_file(0), map_location="cpu", weights_only=True)
    net = build_lite_classifier(0, pretrained=False)
    keys = list(source)
    # swap two BN tensors of equal shape: positions and shapes still line up, roles do not
    i = keys.index("_blocks.1._bn0.weight")
    j = keys.index("_blocks.1._bn1.weight")
    keys[i], keys[j] = keys[j], keys[i]
    with pytest.raises(TeacherWeightsMismatch):
        map_lite_weights(OrderedDict((k, source[k]) for k in keys), net)
    with pytest.raises(TeacherWeightsMismatch):  # Lite2's file on Lite0: same tensor count, other shapes
        map_lite_weights(torch.load(lite_weights_file(2), map_location="cpu", weights_only=True), net)


@pytest.mark.parametrize(("backbone", "stages"), [("efficientnet_lite0", (1, 2, 4)),
                                                  ("efficientnet_lite0_stage3", (1, 2, 3))])
def test_lite0_teacher_matches_timm_with_static_padding(backbone: str, stages: tuple[int, int, int]):
    """The teacher's features are the outputs of those timm stages of the ImageNet network."""
    reference = build_lite_classifier(0).eval()
    teacher = build_teacher(backbone)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        y = reference.bn1(reference.conv_stem(x))
        expected = []
        for i, block in enumerate(reference.blocks[: stages[-1] + 1]):
            y = block(y)
            if i in stages:
                expected.append(y)
        for got, want in zip(teacher(x), expected, strict=True):
            torch.testing.assert_close(got, want)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="resnet18"):
        get_teacher_spec("vgg16")
    with pytest.raises(ValueError, match="rd4ad"):
        get_method("patchcore")


@pytest.mark.parametrize("method", ["rd4ad", "rdpp", "drd", "reason"])
@pytest.mark.parametrize(("backbone", "embedding"), [("efficientnet_lite0", 112), ("wide_resnet50_2", 1024)])
def test_a_narrower_one_class_embedding_feeds_the_same_decoder_shapes(method: str, backbone: str, embedding: int):
    """``embedding_channels`` narrows φ for every method; the decoder still restores the teacher's three maps, and
    the student has fewer parameters than the papers' (``None``)."""
    spec = get_teacher_spec(backbone, embedding)
    assert spec.embedding_channels == embedding and get_teacher_spec(backbone).embedding_channels is None
    teacher = build_teacher(backbone, pretrained=False)
    net = get_method(method).build(spec, teacher).eval()
    papers = get_method(method).build(get_teacher_spec(backbone), teacher)
    side = 64 if backbone == "wide_resnet50_2" else 256
    with torch.no_grad():
        features = net.encode(torch.zeros(1, 3, side, side))
        phi = net.bottleneck(net.project(features))
        student = net.decoder(phi)
    assert phi.shape == (1, embedding, side // 32, side // 32)
    assert [s.shape for s in student] == [t.shape for t in features]
    assert n_params(net.bottleneck) + n_params(net.decoder) < n_params(papers.bottleneck) + n_params(papers.decoder)


@pytest.mark.parametrize(("backbone", "bad"), [("efficientnet_lite0", 0), ("efficientnet_lite0", -8),
                                               ("efficientnet_lite0", 112.0), ("wide_resnet50_2", 1022)])
def test_embedding_channels_the_student_cannot_be_built_with_are_refused(backbone: str, bad):
    with pytest.raises(ValueError, match="embedding_channels must be a positive integer"):
        get_teacher_spec(backbone, bad)
