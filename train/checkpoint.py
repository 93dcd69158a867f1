"""rdedge checkpoints: state dict plus JSON metadata in one file that loads with ``torch.load(weights_only=True)``.

Layout of the saved dict::

    {"format": "rdedge-checkpoint", "format_version": 1,
     "metadata": "<ModelMetadata JSON>", "state_dict": {...all weights, teacher included...}}

The teacher's weights are included, so a checkpoint rebuilds the exact model without the original weights files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from sdk.errors import RdedgeError
from sdk.fileio import atomic_path, resolve_run_file
from sdk.metadata import ModelMetadata

from .backbones import build_teacher, get_teacher_spec
from .components.feature_norm import FeatureStandardizer
from .graph import DetectorGraph
from .methods import get_method
from .model import ReverseDistillationNet

CHECKPOINT_FORMAT = "rdedge-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
"""File name of the checkpoint inside a run folder."""


class CheckpointError(RdedgeError, ValueError):
    """A file that is not a readable rdedge checkpoint."""


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of all tensors, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A run folder or a checkpoint file → the checkpoint file."""
    return resolve_run_file(path, CHECKPOINT_NAME, CheckpointError, "train one with `rdedge train ... --out RUN_DIR`")


def save_checkpoint(path: str | os.PathLike[str], net: ReverseDistillationNet, metadata: ModelMetadata) -> Path:
    """Write a checkpoint atomically (temporary file, then rename); the weights hash goes into the metadata."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    metadata = metadata.replace(weights_sha256=weights_sha256(state))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "metadata": metadata.to_json(),
        "state_dict": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[ModelMetadata, dict[str, torch.Tensor]]:
    """Read a checkpoint (weights only, no pickled code) → (metadata, state dict)."""
    p = resolve_checkpoint(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not an rdedge checkpoint")
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{p} was written by a newer rdedge (format {payload['format_version']})")
    return ModelMetadata.from_json(payload["metadata"]), payload["state_dict"]


def build_graph_from_checkpoint(
    path: str | os.PathLike[str], graph_overrides: dict[str, Any] | None = None
) -> tuple[DetectorGraph, ModelMetadata]:
    """Rebuild the detector graph of a checkpoint, in eval mode, with its exact weights.

    Args:
        path: Run folder or checkpoint file.
        graph_overrides: Graph options to change from the trained ones (e.g. ``{"refinement": False}``); the
            returned metadata records the options in force, its calibration is then the caller's to redo.
    """
    metadata, state = load_checkpoint(path)
    spec = get_teacher_spec(metadata.backbone, metadata.training.get("embedding_channels"))
    method = get_method(metadata.method, **metadata.training.get("method_options", {}))
    # The teacher is built without ImageNet weights only because the checkpoint's copy is loaded right below
    # (strict=True, so any missing tensor is an error, never a silently random layer).
    teacher = build_teacher(metadata.backbone, pretrained=False)
    if metadata.training.get("feature_norm", "none") != "none":
        teacher.feature_norm = FeatureStandardizer(spec.channels)  # its statistics are in the state dict
    net = method.build(spec, teacher)
    net.load_state_dict(state, strict=True)
    if weights_sha256(net.state_dict()) != metadata.weights_sha256:
        raise CheckpointError(f"{path}: weights do not match the hash recorded in the checkpoint (corrupt file?)")
    options = {**method.graph_options(), **metadata.graph_options, **(graph_overrides or {})}
    graph = DetectorGraph(net, metadata.image_size, **options)
    return graph.eval(), metadata.replace(graph_options=options)
