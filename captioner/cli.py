"""The `captioner` command line: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

TRAIN_HELP = {
    "data": "Karpathy-format dataset JSON (default: the built-in synthetic dataset)",
    "images": "root folder of the dataset's images (default: the JSON's folder)",
    "synthetic_dir": "where the synthetic dataset is generated and reused",
    "out": "run directory",
    "encoder": "encoder name: small_cnn or a keras.applications backbone (e.g. resnet50)",
    "encoder_weights": "encoder weights: imagenet (needs internet) or a local weights file",
    "train_encoder": "train the encoder's weights (default: only for small_cnn)",
    "attention": "soft, or mean (ablation: the mean annotation at every step)",
    "penalty_weight": "lambda of the doubly stochastic attention penalty",
    "min_count": "keep words seen at least this often in the training captions",
    "max_length": "longest caption in words (longer ones are truncated)",
    "val_images": "validation images scored after every epoch",
}


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, exit code 2."""


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from captioner.config import TrainConfig

    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = TRAIN_HELP.get(field.name, field.name.replace("_", " "))
        if field.name == "train_encoder" or isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            kind = str if default is None else type(default)
            parser.add_argument(
                flag, type=kind, default=default, help=f"{help_text} (default: {default})"
            )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_decoding_options(parser: argparse.ArgumentParser, default_beam: int) -> None:
    parser.add_argument(
        "--beam-size",
        type=_positive_int,
        default=default_beam,
        help=f"beam width, 1 for greedy decoding (default: {default_beam})",
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=0.0,
        help="rank beams by log-probability / length ** this (default: 0, the plain sum)",
    )
    parser.add_argument("--suppress-unk", action="store_true", help="never generate <unk>")


def _decoding_options(args) -> dict:
    return {
        "beam_size": args.beam_size,
        "length_penalty": args.length_penalty,
        "suppress_unk": args.suppress_unk,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner", description="Show, Attend and Tell image captioning."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate the synthetic dataset")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--num-train", type=int, default=6000)
    synth.add_argument("--num-val", type=int, default=500)
    synth.add_argument("--num-test", type=int, default=500)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=128)

    train = commands.add_parser("train", help="train a captioning model")
    _add_train_options(train)
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    caption = commands.add_parser("caption", help="caption image files")
    caption.add_argument("--model", required=True, help="run directory of a trained model")
    caption.add_argument("inputs", nargs="+", help="image files, directories or glob patterns")
    caption.add_argument("--format", choices=("text", "json"), default="text")
    caption.add_argument("--attention-dir", help="write attention maps (PNG and .npz) here")
    caption.add_argument("--attention-format", choices=("png", "npz", "both"), default="both")
    caption.add_argument("--batch-size", type=int, default=32)
    _add_decoding_options(caption, default_beam=3)

    evaluate = commands.add_parser("evaluate", help="score a model on a dataset split")
    evaluate.add_argument("--model", required=True, help="run directory of a trained model")
    evaluate.add_argument("--data", help="dataset JSON (default: the one the model trained on)")
    evaluate.add_argument("--images", help="root folder of the dataset's images")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--out", help="output folder (default: RUN_DIR/SPLIT)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    _add_decoding_options(evaluate, default_beam=1)

    export = commands.add_parser("export", help="export a model as a SavedModel and TFLite")
    export.add_argument("--model", required=True, help="run directory of a trained model")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--format", choices=("savedmodel", "tflite", "both"), default="both")
    _add_decoding_options(export, default_beam=3)
    return parser


def run_synth(args) -> int:
    from captioner.synth import generate_dataset

    path = generate_dataset(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        seed=args.seed,
        image_size=args.image_size,
    )
    print(path)
    return EXIT_OK


def run_train(args) -> int:
    from captioner.config import TrainConfig
    from captioner.training import train

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)
    }
    run_dir = train(TrainConfig(**values), verbose=0 if args.quiet else 2)
    print(f"run directory: {run_dir}")
    return EXIT_OK


def _load_captioner(run_dir: str, **options):
    from captioner.inference import Captioner

    try:
        return Captioner.from_run_dir(run_dir, **options)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error


def run_caption(args) -> int:
    from captioner.captioning import caption_files
    from captioner.images import expand_inputs

    captioner = _load_captioner(args.model, **_decoding_options(args))
    paths = expand_inputs(args.inputs)
    formats = ("png", "npz") if args.attention_format == "both" else (args.attention_format,)
    failed = 0
    for result in caption_files(
        captioner,
        paths,
        batch_size=args.batch_size,
        attention_dir=args.attention_dir,
        attention_formats=formats,
    ):
        if result.error is not None:
            failed += 1
            print(f"captioner: {result.error}", file=sys.stderr)
        elif args.format == "json":
            print(json.dumps(result.to_json()), flush=True)
        else:
            print(f"{result.path}: {result.caption.text}", flush=True)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def run_evaluate(args) -> int:
    from captioner.config import TrainConfig
    from captioner.data import load_karpathy, select_split
    from captioner.evaluation import evaluate_split
    from captioner.metrics import format_table

    captioner = _load_captioner(args.model, **_decoding_options(args))
    run_dir = Path(args.model)
    config = TrainConfig.load(run_dir / "config.json")
    data = args.data or config.data or str(Path(config.synthetic_dir) / "dataset.json")
    images = args.images if args.data else (args.images or config.images)
    if not Path(data).is_file():
        raise UsageError(f"{data}: no such dataset file")
    records = [r for r in select_split(load_karpathy(data, images), args.split) if r.captions]
    if not records:
        raise UsageError(f"{data}: no {args.split} images with captions")
    out = Path(args.out) if args.out else run_dir / args.split
    metrics = evaluate_split(
        captioner,
        records,
        split=args.split,
        out_dir=out,
        batch_size=args.batch_size,
        extra={"model": str(run_dir), "dataset": str(data)},
    )
    print(format_table(metrics))
    print(f"written to {out}")
    return EXIT_OK


def run_export(args) -> int:
    from captioner.export import export_model

    captioner = _load_captioner(args.model, **_decoding_options(args))
    formats = ("savedmodel", "tflite") if args.format == "both" else (args.format,)
    for path in export_model(captioner, args.out, formats=formats):
        print(path)
    return EXIT_OK


COMMANDS = {
    "synth": run_synth,
    "train": run_train,
    "caption": run_caption,
    "evaluate": run_evaluate,
    "export": run_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, FileNotFoundError, ValueError, json.JSONDecodeError) as error:
        if args.debug:
            raise
        print(f"captioner: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
