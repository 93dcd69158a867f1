"""``rdedge train``: train a model on good images and calibrate its thresholds."""

from __future__ import annotations

import argparse

from train.config import AMP_MODES, AUGMENTATIONS, DEFAULT_STEPS, FEATURE_NORMS, LR_SCHEDULES, TrainConfig

from ..arguments import (
    add_head_arguments,
    add_test_folder_arguments,
    image_size_argument,
    parse_options,
    test_folders,
)

NAME = "train"
HELP = "Train a model on good images and calibrate its threshold."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig(data="", out="")
    parser.add_argument("--data", required=True,
                        help="dataset: an MVTec-layout folder, a plain folder of good images (recursive), or "
                             "elpv:mono / elpv:poly (pip install elpv-dataset)")
    parser.add_argument("--category", default=None, help="MVTec category when --data is the root of several")
    add_test_folder_arguments(parser)
    parser.add_argument("--method", default=defaults.method,
                        help=f"training method: rd4ad, rdpp, drd or reason (default: {defaults.method})")
    parser.add_argument("--backbone", default=defaults.backbone,
                        help=f"teacher: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, resnet18 or "
                             f"wide_resnet50_2; efficientnet_lite0_stage3 (an ablation: Lite0 with its stride-16 "
                             f"features one stage earlier) (default: {defaults.backbone})")
    parser.add_argument("--weights", default=None,
                        help="local ImageNet weights file for a ResNet teacher (default: the torch hub cache)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None,
                        help=f"training length in epochs, fixed (default: --steps {DEFAULT_STEPS})")
    length.add_argument("--steps", type=int, default=None,
                        help="training length in optimiser steps: the fewest whole epochs making at least this many "
                             f"(a small set gets as many updates as a large one; default: {DEFAULT_STEPS})")
    parser.add_argument("--image-size", type=image_size_argument, default=image_size_argument(str(defaults.image_size)),
                        help="model input: auto (the training images' aspect, short side 256; auto:N for short side "
                             "N), a side (256, square) or HEIGHTxWIDTH (640x256 for tall strips, 256x640 for wide "
                             "ones), each a multiple of 32; images are resized to it, so keep their aspect "
                             f"(default: {defaults.image_size})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"images per step (default: {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's, 0.005)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                        help="learning rate over the run: constant (the papers', default) or cosine (decays to zero "
                             "along a half cosine over the optimiser steps)")
    parser.add_argument("--weight-average", type=float, default=defaults.weight_average, metavar="DECAY",
                        help="export a moving average of the student's weights (decay per optimiser step, e.g. "
                             "0.995: about the last 200 steps) instead of the last step's, which a late jump of the "
                             "loss can spoil (default: 0, the papers': the last step's); the last step's are kept "
                             "too, in OUT/last_step")
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=defaults.augment,
                        help="training images as they are (none, the papers', default) or flip (each mirrored "
                             "left-right and top-bottom at random: only for parts whose good look does not depend "
                             "on orientation)")
    parser.add_argument("--hard-images", type=float, default=defaults.hard_images, metavar="SHARE",
                        help="share of each epoch's draws given again to the training images the student restores "
                             "worst (scored before each epoch; e.g. 0.1), for good parts with rare normal regions "
                             "that score as false alarms; scoring them takes almost as long as training; measured "
                             "worse on KolektorSDD, see the README (default: 0, the papers': every image once per "
                             "epoch)")
    parser.add_argument("--bn-freeze", type=float, default=defaults.bn_freeze, metavar="SHARE",
                        help="share of the last optimiser steps in which the student's batch-norm layers use their "
                             "running statistics, as at inference, so that rare good images that batch statistics "
                             f"hide are learned as inference sees them (default: {defaults.bn_freeze:g}; 0 is the "
                             "papers': batch statistics at every step)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default: {defaults.seed})")
    parser.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction,
                        help="share of good training images held out to calibrate the thresholds (default: "
                             f"{defaults.validation_fraction})")
    parser.add_argument("--sigmas", type=float, default=defaults.sigmas,
                        help="thresholds = median + SIGMAS x robust std (1.4826 x median absolute deviation) of the "
                             "held-out good images' scores (image) and map maxima (pixel) (default: "
                             f"{defaults.sigmas:g})")
    add_head_arguments(parser, defaults.image_score, defaults.top_fraction, defaults.map_strides, defaults.map_sigma,
                       defaults.map_pool)
    parser.add_argument("--feature-norm", choices=FEATURE_NORMS, default=defaults.feature_norm,
                        help="teacher features as the papers compare them (none, default) or standardize: every "
                             "teacher channel scaled by its mean and standard deviation over the good training "
                             "images, so that low-variance channels count as much as loud ones; fitted once "
                             "before training, carried inside the exported graph. Measured worse than none on "
                             "every public set (benchmarks/results/accuracy.md)")
    parser.add_argument("--embedding-channels", type=int, default=defaults.embedding_channels, metavar="N",
                        help="channels of the student's one-class embedding, the bottleneck the decoder restores "
                             "the teacher's features from (default: twice the teacher's deepest channels, the "
                             "papers': 224 for efficientnet_lite0); fewer make a tighter bottleneck (112 measured "
                             "worse on KolektorSDD, see the README)")
    parser.add_argument("--max-train-images", type=int, default=None, help="train on at most N images (quick runs)")
    parser.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, repeatable: drd refinement=false; reason suppression_target=teacher")
    parser.add_argument("--device", default=defaults.device,
                        help="where to train: auto (CUDA when present, else the CPU; default), cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=AMP_MODES, default=defaults.amp,
                        help="mixed precision on CUDA: auto (bf16 where supported, else fp16 with loss scaling; "
                             "default), bf16, fp16 or off; the CPU trains in FP32")
    parser.add_argument("--out", required=True, help="run folder to write checkpoint.pt into")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run interrupted in --out (Ctrl-C, a crash) from its last complete epoch; "
                             "give the same options (--epochs or --steps may change). Every epoch's end is saved to "
                             "OUT/train_state.pt, removed when the run completes")


def run(args: argparse.Namespace) -> int:
    from train.trainer import LAST_STEP_DIR, recorded_epochs, train

    config = TrainConfig(
        data=args.data, out=args.out, category=args.category, method=args.method, backbone=args.backbone,
        weights=args.weights, epochs=args.epochs, steps=args.steps, image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr, lr_schedule=args.lr_schedule, augment=args.augment, weight_average=args.weight_average,
        hard_images=args.hard_images,
        bn_freeze=args.bn_freeze,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        sigmas=args.sigmas,
        image_score=args.image_score, top_fraction=args.top_fraction, map_strides=args.map_strides,
        map_sigma=args.map_sigma,
        map_pool=args.map_pool,
        feature_norm=args.feature_norm, embedding_channels=args.embedding_channels,
        max_train_images=args.max_train_images,
        method_options=parse_options(args.method_option),
        device=args.device, amp=args.amp, **test_folders(args),
    )
    from train.checkpoint import load_checkpoint

    path = train(config, progress=not args.quiet, resume=args.resume)
    metadata, _ = load_checkpoint(path)
    training = metadata.training
    print(f"checkpoint written to {path}")
    print(f"  input size {metadata.image_size} (asked: {config.image_size}); {training['epochs_run']} epochs, "
          f"{training['optimiser_steps']} optimiser steps on {training['n_train']} good images")
    held_out = recorded_epochs(training.get("held_out_score_history", []))
    if held_out:
        best_epoch, best = min(held_out, key=lambda item: item[1])
        print(f"  held-out good images (median score): {held_out[-1][1]:.4g} after the last epoch, lowest "
              f"{best:.4g} after epoch {best_epoch}")
    if config.weight_average:
        last_step = path.parent / LAST_STEP_DIR
        print(f"  exported weights: the moving average (decay {config.weight_average:g}); the last step's, "
              f"calibrated alike, are in {last_step} (rdedge export {last_step} to compare)")
    return 0
