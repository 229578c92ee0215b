"""`brainscore harmonize train|evaluate`: the neural harmonizer (``harmonized_models.harmonizer``)."""
from __future__ import annotations

import argparse
import json

from benchmarks_it_maps.cli import DefaultsHelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``harmonize train`` and ``harmonize evaluate``."""
    group = subparsers.add_parser("harmonize", help="train or evaluate harmonized models (ClickMe alignment)")
    commands = group.add_subparsers(dest="harmonize_command", metavar="COMMAND")
    group.set_defaults(func=lambda args: group.print_help() or 2)

    t = commands.add_parser(
        "train", help="harmonize a timm model on ImageNet + ClickMe",
        formatter_class=DefaultsHelpFormatter,
        epilog="Multi-GPU: torchrun --nproc_per_node N -m benchmarks_it_maps harmonize train ... "
               "(--batch-size is per process). The final checkpoint OUT/final loads with "
               "harmonized_models.load_model('harmonized:OUT/final').")
    t.add_argument("--model", required=True, help="timm model name")
    t.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights")
    t.add_argument("--imagenet", help="ImageNet training ImageFolder directory (token-0 samples)")
    t.add_argument("--clickme", required=True, help="ClickMe TFRecord shards (file or folder) or a ClickMe folder")
    t.add_argument("--epochs", type=int, required=True, help="training epochs (see --steps-per-epoch)")
    t.add_argument("--out", required=True, help="output folder (checkpoints/, log.jsonl, loss.png, final/)")
    t.add_argument("--imagenet-val", help="ImageFolder validation set: top-1 written to final/model.json")
    t.add_argument("--num-classes", type=int, help="classifier outputs (default: the timm model's)")
    t.add_argument("--image-size", type=int, help="input size (default: the timm model's)")
    t.add_argument("--batch-size", type=int, default=32, help="images per step and process")
    t.add_argument("--clickme-fraction", type=float, default=0.5, help="share of each batch from ClickMe")
    t.add_argument("--steps-per-epoch", type=int, help="default: one pass over the ClickMe samples")
    t.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="optimizer")
    t.add_argument("--lr", type=float, default=0.01, help="peak learning rate (after warm-up, then cosine decay)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps")
    t.add_argument("--min-lr", type=float, default=0.0, help="learning rate at the end of the cosine decay")
    t.add_argument("--lambda-weights", type=float, default=1e-5,
                   help="weight of the L2 penalty on the weights (0.5 x sum of squares, as the paper)")
    t.add_argument("--lambda-harmonization", type=float, default=1.0,
                   help="weight of the harmonization term (pyramidal MSE between saliency and ClickMe maps); 0 "
                        "trains on cross-entropy only")
    t.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the cross-entropy")
    t.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm (0 = off)")
    t.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="auto = bf16 on CUDA, off on CPU")
    t.add_argument("--seed", type=int, default=0, help="seed of data order, augmentation and initialisation")
    t.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop / flip augmentation")
    t.add_argument("--map-preprocessing", choices=("reference", "none"), default="reference",
                   help="for ClickMe folder maps: 'none' if they are already blurred")
    t.add_argument("--workers", type=int, default=4, help="data-loader processes")
    t.add_argument("--log-every", type=int, default=10, help="steps between log.jsonl lines")
    t.add_argument("--device", default="auto", help="auto: CUDA when available, else CPU")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--stop-after-steps", type=int, help="save a checkpoint and stop after this many steps "
                                                        "(for time-limited job slots; continue with --resume)")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    t.set_defaults(func=_train)

    e = commands.add_parser("evaluate", help="ClickMe alignment (and ImageNet top-1) of a model",
                            formatter_class=DefaultsHelpFormatter)
    e.add_argument("--model", required=True, help="'harmonized:PATH', a registered model id or a timm name")
    e.add_argument("--clickme", required=True, help="ClickMe validation shards or a ClickMe folder")
    e.add_argument("--imagenet-val", help="ImageFolder validation set for top-1")
    e.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    e.add_argument("--device", default="auto", help="auto: CUDA when available, else CPU")
    e.add_argument("--workers", type=int, default=0, help="data-loader processes")
    e.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="timm names: random weights (tests)")
    e.add_argument("--map-preprocessing", choices=("reference", "none"), default="reference",
                   help="for ClickMe folder maps: 'none' if they are already blurred")
    e.add_argument("--out", help="folder for scores.json and examples.png")
    e.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    e.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from benchmarks_it_maps.cli import UserError
    from harmonized_models.harmonizer.checkpoint import CheckpointError
    from harmonized_models.harmonizer.clickme import ClickMeError
    from harmonized_models.harmonizer.data import DataError
    from harmonized_models.harmonizer.tfrecord import TFRecordError
    from harmonized_models.harmonizer.train import TrainConfig, TrainError, train

    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if not config.clip_grad:
        config.clip_grad = None
    try:
        final = train(config)
    except (TrainError, DataError, ClickMeError, TFRecordError, CheckpointError) as error:
        raise UserError(str(error)) from error
    if final is None:
        print(f"stopped early; continue with the same command and --resume (checkpoints in {args.out}/checkpoints)")
    else:
        print(f"final checkpoint: {final}\nload it with harmonized_models.load_model('harmonized:{final}')")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from benchmarks_it_maps.cli import UserError
    from harmonized_models.baselines import WeightsUnavailableError
    from harmonized_models.harmonized import HarmonizedWeightsError
    from harmonized_models.harmonizer.checkpoint import CheckpointError
    from harmonized_models.harmonizer.clickme import ClickMeError
    from harmonized_models.harmonizer.data import DataError
    from harmonized_models.harmonizer.evaluate import evaluate
    from harmonized_models.harmonizer.tfrecord import TFRecordError

    try:
        result = evaluate(args.model, args.clickme, imagenet_val=args.imagenet_val, batch_size=args.batch_size,
                          device=args.device, workers=args.workers, pretrained=args.pretrained,
                          map_preprocessing=args.map_preprocessing, out=args.out, progress=args.progress)
    except KeyError as error:
        raise UserError(str(error.args[0] if error.args else error)) from error
    except (DataError, ClickMeError, TFRecordError, CheckpointError, WeightsUnavailableError,
            HarmonizedWeightsError) as error:
        raise UserError(str(error)) from error
    summary = {k: v for k, v in result.items() if k != "per_image"}
    print(json.dumps(summary, indent=2))
    return 0
