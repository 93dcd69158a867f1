"""OpenVINO IR (``.xml`` + ``.bin``) from an exported rdedge ONNX graph: ``rdedge export-openvino``."""

from __future__ import annotations

import os
from pathlib import Path

from sdk.backends.openvino import IR_SUFFIX, import_openvino, read_metadata
from sdk.contract import METADATA_KEY
from sdk.errors import ModelLoadError


def write_ir(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Convert an exported ``.onnx`` graph to OpenVINO IR (``.xml`` + ``.bin``), metadata included.

    The IR holds the same graph (weights at the ONNX file's precision: no FP16 compression of an FP32 graph), so
    it gives the same numbers as the ONNX file in OpenVINO; it loads faster and needs no ONNX front end. Both
    files are written under temporary names, then renamed.

    Args:
        onnx_path: An ``.onnx`` file written by ``rdedge export``.
        out: The ``.xml`` to write (default: beside the ONNX file, same name).

    Returns:
        The ``.xml`` path.

    Raises:
        ModelLoadError: The ONNX file cannot be read or carries no rdedge metadata.
    """
    ov = import_openvino()
    onnx_path = Path(onnx_path)
    xml = Path(out) if out is not None else onnx_path.with_suffix(IR_SUFFIX)
    if xml.suffix != IR_SUFFIX:
        raise ValueError(f"an OpenVINO IR file ends in {IR_SUFFIX}: {xml}")
    try:
        model = ov.Core().read_model(str(onnx_path))
    except Exception as exc:
        raise ModelLoadError(f"OpenVINO cannot read {onnx_path}: {exc}") from exc
    metadata = read_metadata(model, onnx_path)
    model.set_rt_info(metadata.to_json(), [METADATA_KEY])
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp_xml = xml.with_name(f".{xml.stem}.tmp{os.getpid()}{IR_SUFFIX}")
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp_xml, xml)
    finally:
        for leftover in (tmp_xml, tmp_xml.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
    return xml
