"""``rdedge export``: a trained run → one self-checked ONNX detector graph, calibrated at its precision."""

from __future__ import annotations

import argparse

from ..arguments import add_head_arguments, add_precision_argument

NAME = "export"
HELP = "Export a trained run to one self-checked ONNX detector graph."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (or checkpoint file) from `rdedge train`")
    parser.add_argument("--out", default=None,
                        help="ONNX file to write (default: RUN_DIR/model.onnx, or model_<precision>.onnx)")
    add_precision_argument(parser, default="fp32", help_text="graph precision (default: fp32)")
    parser.add_argument("--calib-images", type=int, default=256,
                        help="int8: good training images to calibrate on (default: 256, or all when fewer)")
    parser.add_argument("--calib-method", choices=["percentile", "entropy", "minmax"], default="percentile",
                        help="int8: activation range calibration (default: percentile)")
    parser.add_argument("--int8-max-noise", type=float, default=None, metavar="SPREADS",
                        help="int8: the accuracy gate's largest accepted noise on the held-out good images' scores, "
                             "in robust spreads of those scores (default: 0.2, fixed for a 0.005 AUROC bound when "
                             "production's good parts score like the held-out ones); lower it (e.g. 0.1) to keep "
                             "more layers FP32 where they do not: see the README's INT8 section")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, at least 17 (default: 18)")
    parser.add_argument("--check-images", type=int, default=8,
                        help="real images for the ONNX Runtime vs PyTorch self-check (default: 8)")
    refinement = parser.add_mutually_exclusive_group()
    refinement.add_argument("--no-refinement", action="store_true",
                            help="DRD ablation: export without the detection refinement")
    refinement.add_argument("--refinement", action="store_true",
                            help="apply DRD's detection refinement to the image score (any method)")
    add_head_arguments(parser, None, None, None, None, None)


def graph_overrides(args: argparse.Namespace) -> dict[str, object] | None:
    """Head options the command line changes from the trained run's (None: none)."""
    overrides: dict[str, object] = {}
    if args.refinement or args.no_refinement:
        overrides["refinement"] = bool(args.refinement)
    if args.image_score is not None:
        overrides["image_score"] = args.image_score
    if args.top_fraction is not None:
        overrides["top_fraction"] = args.top_fraction
    if args.map_strides is not None:
        overrides["map_strides"] = list(args.map_strides)
    if args.map_sigma is not None:
        overrides["sigma"] = args.map_sigma
    if args.map_pool is not None:
        overrides["feature_pool"] = args.map_pool
    return overrides or None


def run(args: argparse.Namespace) -> int:
    from export.onnx import export_onnx

    overrides = graph_overrides(args)
    report = export_onnx(args.run, args.out, opset=args.opset, check_images=args.check_images,
                         graph_overrides=overrides, precision=args.precision, calib_images=args.calib_images,
                         calib_method=args.calib_method, int8_max_noise=args.int8_max_noise,
                         progress=not args.quiet)
    checks = report.checks
    print(f"exported {report.path}")
    print(f"  self-check on {checks['n_images']} real images (tolerance {checks['tolerance']:g}):")
    for key, value in checks.items():
        if key.startswith("onnxruntime"):
            print(f"    fp32 {key}: max relative error {value:.2e}")
    reduced = checks.get("reduced_precision")
    if reduced:
        print(f"    {reduced['precision']} vs fp32: map correlation {reduced['map_correlation_vs_fp32']:.5f}, "
              f"max map error {reduced['map_max_error_vs_fp32_range']:.2%} of the map range, "
              f"max score error {reduced['score_max_relative_error_vs_fp32']:.2%}")
    qdq = checks.get("qdq")
    if qdq:
        print(f"    int8: {qdq['quantize_linear']} QuantizeLinear / {qdq['dequantize_linear']} DequantizeLinear, "
              f"{qdq['nonzero_zero_points']} non-zero zero points; calibrated on {checks['calibration_images']} good "
              f"training images ({checks['calibration_method']})")
    layers = checks.get("int8_fp32_layers")
    if layers:
        stored = layers.get("fp32_layer_weights", "fp32")
        weights = f" with {stored.upper()} weights" if stored != "fp32" and layers["n_fp32"] else ""
        print(f"    int8: {layers['n_int8']} layers INT8, {layers['n_fp32']} kept FP32{weights} (the most sensitive); "
              f"gate on held-out good images with synthetic defects:")
        for runtime, gate in layers.get("gates", {"onnxruntime": layers["gate"]}).items():
            print(f"      {runtime}: image AUROC {gate['image_auroc']:.4f} (FP32 {gate['image_auroc_fp32']:.4f}), "
                  f"pixel AUROC {gate['pixel_auroc']:.4f} (FP32 {gate['pixel_auroc_fp32']:.4f}), score rank "
                  f"correlation {gate['score_rank_correlation']:.3f}, good-score noise {gate['good_score_noise']:.3f}")
    calibration = report.metadata.calibration
    print(f"  thresholds: image {calibration.threshold:.5g}, pixel {calibration.pixel:.5g} ({calibration.source})")
    stages = checks.get("export_seconds", {})
    if stages:
        print(f"  time: {sum(stages.values()):.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()) + ")")
    return 0
