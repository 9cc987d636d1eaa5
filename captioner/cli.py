"""The `captioner` command line: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from captioner.data.images import DEFAULT_MAX_PIXELS
from captioner.errors import CaptionerError
from captioner.runtime import start_tensorflow

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

TRAIN_HELP = {
    "data": "captions: a Karpathy split JSON, Flickr8k's Flickr8k.token.txt (with its split "
    "lists beside it), Flickr30k's token file, a captions.txt CSV (image,caption) or a COCO "
    "captions_*.json; a folder holding one (default: the built-in synthetic dataset)",
    "images": "root folder of the dataset's images (default: the JSON's folder; Flickr "
    "token files need it)",
    "synthetic_dir": "where the synthetic dataset is generated and reused",
    "skip_missing": "train without the dataset's missing image files (default: refuse)",
    "out": "run directory (default: runs/NAME after the data: runs/synthetic, runs/flickr8k)",
    "encoder": "encoder name: small_cnn, an offline ImageNet encoder (efficientnet_lite0/1/2, "
    "mobilenet_v2_tv) or a keras.applications backbone (e.g. resnet50) (default: "
    "efficientnet_lite0 on the synthetic data, efficientnet_lite2 with --data)",
    "encoder_weights": "encoder weights: imagenet (offline for efficientnet_lite*/mobilenet_v2_tv; "
    "keras.applications backbones need internet or the Keras cache; small_cnn has none), none, "
    "or a local weights file (default: imagenet)",
    "image_size": "input side in pixels (default: 128 on the synthetic data, else the "
    "encoder's native size)",
    "grid_stride": "16: cut an offline encoder after its last stride-16 stage, the paper's "
    "grid; 32: the whole network (default for offline encoders: 16 on the synthetic data, 32 "
    "with --data; 32 for the others)",
    "feature_norm": "standardise the encoder's features per channel (default: for pretrained "
    "encoders)",
    "train_encoder": "train the encoder's weights (default: only for small_cnn)",
    "grid_coordinates": "append every grid cell's (x, y) to its features, so that attention "
    "knows where a cell is (not in the paper; default: on)",
    "feature_dim": "project the encoder's features to this depth first (0: no projection)",
    "embed_dim": "word embedding size E",
    "units": "LSTM units H",
    "attention_dim": "attention MLP size A",
    "dropout": "dropout before the deep output layer",
    "epochs": "epochs of training (the first stage)",
    "data_kind": "synthetic or photos: which defaults apply, for training and for decoding "
    "later (default: synthetic when every image lists its objects, else photos)",
    "decoder": "paper: attention from the state before the previous word was read (Xu et al.); "
    "topdown: a first LSTM reads the word, then attends, a second writes (Anderson et al.)",
    "coverage": "attention that also sees how much each grid cell has been attended so far "
    "(not in the paper)",
    "attention": "soft; mean (ablation: the mean annotation at every step); soft+mean: the "
    "attended and the mean annotation side by side",
    "penalty_weight": "lambda of the doubly stochastic attention penalty, added to the mean "
    "cross-entropy per word; the paper's lambda = 1 on the summed caption likelihood is about "
    "1 / (words per caption) here",
    "min_count": "keep words seen at least this often in the training captions",
    "max_length": "longest caption in words (longer ones are truncated)",
    "val_images": "validation images scored after every epoch",
    "lr_schedule": "learning-rate schedule after the warm-up: cosine, plateau or constant",
    "plateau_patience": "reduce-on-plateau: epochs without a better validation --select-metric",
    "plateau_factor": "reduce-on-plateau: factor the learning rate is multiplied by",
    "bucketing": "batch captions of similar length together, cut to the longest (less padding)",
    "precision": "float32, or mixed: float16 on GPU, bfloat16 on CPU (losses in float32)",
    "strategy": "tf.distribute strategy: default, mirrored (local GPUs), multiworker (TF_CONFIG)",
    "checkpoint_steps": "checkpoint every this many steps as well as at epoch ends (0: only there)",
    "resume": "continue from the run directory's checkpoint if there is one",
    "tensorboard": "write TensorBoard logs to RUN_DIR/tensorboard",
    "jit_compile": "compile the training step with XLA",
    "feature_cache": "folder of the frozen encoder's cached features ('' for none)",
    "captions_per_image": "captions decoded per image in a batch; the image is encoded once",
    "select_metric": "free-running validation metric that picks the best epoch: bleu1-4, "
    "object_accuracy, pointing_accuracy_all_objects, or meteor/rouge_l/cider with the coco "
    "extra (default: bleu4 on the synthetic data, cider with --data and the coco extra)",
    "early_stopping_patience": "stop after this many epochs without a better validation "
    "score (0: never)",
    "fine_tune_blocks": "after the decoder has trained, fine-tune the top N blocks of a frozen "
    "offline encoder (efficientnet_lite*, mobilenet_v2_tv) with it, on images (0: no)",
    "fine_tune_epochs": "epochs of the fine-tuning stage",
    "fine_tune_learning_rate": "peak learning rate of the fine-tuning stage (cosine decay)",
    "scst_epochs": "after cross-entropy, epochs of self-critical sequence training: sampled "
    "captions rewarded by CIDEr-D above a baseline, --scst-baseline (0: none)",
    "scst_samples": "captions sampled per image in self-critical training",
    "scst_learning_rate": "learning rate of self-critical training",
    "scst_baseline": "what a sample's reward is measured against in self-critical training: "
    "samples, the mean of the image's other samples', or greedy, the greedy caption's",
    "scst_penalty_weight": "weight of the sampled captions' attention penalty in "
    "self-critical training (0: none)",
}


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, exit code 2."""


OPTION_TYPES = {"int": int, "float": float, "str": str}


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from captioner.config import DATA_DEFAULTS, TrainConfig

    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = TRAIN_HELP.get(field.name, field.name.replace("_", " "))
        if (
            "(default:" not in help_text
            and default is None
            and field.name in DATA_DEFAULTS["synthetic"]
        ):
            synthetic, photos = (DATA_DEFAULTS[k][field.name] for k in DATA_DEFAULTS)
            help_text = (
                f"{help_text} (default: {synthetic} on the synthetic data, {photos} with --data)"
            )
        if field.type in ("bool", "bool | None"):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
            continue
        if "(default:" not in help_text:
            help_text = f"{help_text} (default: {default})"
        kind = OPTION_TYPES[field.type.removesuffix(" | None")]
        parser.add_argument(flag, type=kind, default=default, help=help_text)


def _int_at_least(minimum: int):
    """An argparse type: an integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse's "invalid int value: 'x'"
    return parse


def _add_decoding_options(parser: argparse.ArgumentParser, command: str) -> None:
    from captioner.config import DECODING_DEFAULTS

    (
        (synthetic_beam, synthetic_penalty, synthetic_ngram),
        (photo_beam, photo_penalty, photo_ngram),
    ) = (DECODING_DEFAULTS[kind][command] for kind in ("synthetic", "photos"))
    parser.add_argument(
        "--beam-size",
        type=_int_at_least(1),
        help="beam width; 1 with --length-penalty 0 is greedy decoding (default: by the "
        f"model's data: {synthetic_beam} for the synthetic shapes, {photo_beam} for photos)",
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        help="rank beams by log-probability / length ** this; 0: the plain sum (default: by "
        f"the model's data: {synthetic_penalty:g} for the synthetic shapes, {photo_penalty:g} "
        "for photos)",
    )
    parser.add_argument(
        "--no-repeat-ngram",
        type=_int_at_least(0),
        metavar="N",
        help="never repeat a sequence of N words within a caption; 0: allow repeats (default: "
        f"by the model's data: {synthetic_ngram} for the synthetic shapes, {photo_ngram} for "
        "photos)",
    )
    parser.add_argument(
        "--suppress-unk",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="never generate <unk>, take the next likeliest word (default: on)",
    )


def _add_ensemble_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ensemble",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="decode together with this run's model too (repeatable): each word by the mean "
        "of the models' log-probabilities; they must share --model's vocabulary and encoder, "
        "and attention maps stay --model's",
    )


def _load_captioner(args, command: str):
    """The captioner of run directory `args.model`, decoding as `command`'s options say;
    beam width and length penalty left out take the run's defaults for `command`."""
    from captioner.inference.captioner import Captioner

    # RunDirectoryError: reported by main().
    return Captioner.from_run_dir(
        args.model,
        ensemble=getattr(args, "ensemble", ()),
        decoding_for=command,
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
        no_repeat_ngram=args.no_repeat_ngram,
        suppress_unk=args.suppress_unk,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner", description="Show, Attend and Tell image captioning."
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks on errors and TensorFlow's start-up messages",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate the synthetic dataset")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--num-train", type=int, default=6000)
    synth.add_argument("--num-val", type=int, default=500)
    synth.add_argument("--num-test", type=int, default=500)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=128)
    synth.add_argument(
        "--orders",
        choices=("settled", "mixed"),
        default="settled",
        help="settled: each reference's first word settles the order it names the objects in; "
        "mixed: two references begin alike in opposite orders, as human captions do "
        "(default: settled)",
    )

    train = commands.add_parser("train", help="train a captioning model")
    _add_train_options(train)
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    caption = commands.add_parser("caption", help="caption image files")
    caption.add_argument("--model", required=True, help="run directory of a trained model")
    caption.add_argument("inputs", nargs="+", help="image files, directories or glob patterns")
    caption.add_argument("--format", choices=("text", "json"), default="text")
    caption.add_argument("--attention-dir", help="write attention maps (PNG and .npz) here")
    caption.add_argument("--attention-format", choices=("png", "npz", "both"), default="both")
    caption.add_argument(
        "--html",
        metavar="FILE",
        help="write a report page of the images, captions and attention maps (thumbnails in "
        "FILE's folder, in NAME_images/)",
    )
    caption.add_argument("--batch-size", type=int, default=32)
    caption.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images with more pixels (decompression bombs; default: %(default)s)",
    )
    _add_decoding_options(caption, "caption")
    _add_ensemble_option(caption)

    classify = commands.add_parser(
        "classify", help="top ImageNet classes of images (checks an encoder's offline weights)"
    )
    classify.add_argument("inputs", nargs="+", help="image files, directories or glob patterns")
    classify.add_argument(
        "--encoder",
        default="efficientnet_lite2",
        help="an encoder with offline ImageNet weights: efficientnet_lite0, efficientnet_lite1, "
        "efficientnet_lite2 or mobilenet_v2_tv (default: efficientnet_lite2)",
    )
    classify.add_argument(
        "--weights", default="imagenet", help="imagenet (offline package) or a .pth file"
    )
    classify.add_argument("--image-size", type=int, help="input side (default: the encoder's)")
    classify.add_argument("--top-k", type=int, default=5, help="classes per image (default: 5)")
    classify.add_argument("--format", choices=("text", "json"), default="text")
    classify.add_argument("--batch-size", type=int, default=16)

    evaluate = commands.add_parser("evaluate", help="score a model on a dataset split")
    evaluate.add_argument("--model", required=True, help="run directory of a trained model")
    evaluate.add_argument(
        "--data", help="captions in any format train reads (default: the model's training data)"
    )
    evaluate.add_argument("--images", help="root folder of the dataset's images")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--out", help="output folder (default: RUN_DIR/SPLIT)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument(
        "--feature-cache",
        metavar="DIR",
        help="read the split's encoder grids from this feature cache, extracting them once "
        "(as train's --feature-cache; default: none, the images are encoded every time)",
    )
    evaluate.add_argument(
        "--coco-metrics",
        default="meteor,rouge_l,cider,spice",
        help="comma-separated pycocoevalcap metrics to compute, or 'none' "
        "(default: meteor,rouge_l,cider,spice; needs the coco extra)",
    )
    evaluate.add_argument(
        "--coco-tokenizer",
        choices=("ptb", "captioner"),
        default="ptb",
        help="tokens for the pycocoevalcap scorers: its PTB tokenizer (Java) or ours",
    )
    evaluate.add_argument(
        "--skip-missing", action="store_true", help="score without missing image files"
    )
    evaluate.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write report.html, a page of every image with its caption, references, scores "
        "and attention maps, to the output folder (default: on)",
    )
    _add_decoding_options(evaluate, "evaluate")
    _add_ensemble_option(evaluate)

    export = commands.add_parser("export", help="export a model as a SavedModel and TFLite")
    export.add_argument("--model", required=True, help="run directory of a trained model")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--format", choices=("savedmodel", "tflite", "both"), default="both")
    _add_decoding_options(export, "export")
    return parser


def run_synth(args) -> int:
    from captioner.data.synthetic import generate_dataset

    path = generate_dataset(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        seed=args.seed,
        image_size=args.image_size,
        orders=args.orders,
    )
    print(path)
    return EXIT_OK


def run_train(args) -> int:
    from captioner.config import TrainConfig
    from captioner.training.train import train
    from captioner.training.trainer import TrainingDiverged, TrainingInterrupted

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)
    }
    try:
        run_dir = train(TrainConfig(**values), verbose=0 if args.quiet else 1)
    except TrainingDiverged as error:
        print(f"captioner: error: {error}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except TrainingInterrupted as error:
        print(f"captioner: {error}; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"run directory: {run_dir}")
    return EXIT_OK


def _warn(line: str) -> None:
    print(f"captioner: warning: {line}", file=sys.stderr)


def run_caption(args) -> int:
    from captioner.data.images import expand_inputs
    from captioner.inference.caption_files import caption_files

    captioner = _load_captioner(args, "caption")
    paths = expand_inputs(args.inputs)
    formats = ("png", "npz") if args.attention_format == "both" else (args.attention_format,)
    results = caption_files(
        captioner,
        paths,
        batch_size=args.batch_size,
        attention_dir=args.attention_dir,
        attention_formats=formats,
        max_pixels=args.max_pixels,
    )
    kept: list = []
    if args.html:
        results = _keeping(results, kept)
    code = _print_results(results, args.format, lambda r: f"{r.path}: {r.caption.text}")
    if args.html:
        from captioner.inference.report import write_caption_report

        path = write_caption_report(args.html, kept, args.model, captioner.settings)
        print(f"captioner: report written to {path}", file=sys.stderr)
    return code


def _keeping(items, kept: list):
    """Yields `items`, appending each to `kept`."""
    for item in items:
        kept.append(item)
        yield item


def _print_results(results, output_format: str, as_text) -> int:
    """Prints each file's result as it comes (failures on stderr); returns the exit code."""
    failed = 0
    for result in results:
        if result.error is not None:
            failed += 1
            print(f"captioner: {result.error}", file=sys.stderr)
        elif output_format == "json":
            print(json.dumps(result.to_json()), flush=True)
        else:
            print(as_text(result), flush=True)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def run_classify(args) -> int:
    from captioner.data.images import expand_inputs
    from captioner.inference.classification import classify_files
    from captioner.models.encoders import OFFLINE_ENCODERS, build_encoder

    if args.encoder not in OFFLINE_ENCODERS:
        raise UsageError(
            f"classify needs an encoder with an ImageNet head; choose from "
            f"{', '.join(OFFLINE_ENCODERS)} (not {args.encoder!r})"
        )
    if args.top_k < 1 or args.top_k > 1000 or args.batch_size < 1:
        raise UsageError("--top-k must be in 1..1000 and --batch-size at least 1")
    classifier = build_encoder(args.encoder, args.image_size, args.weights, include_top=True)
    paths = expand_inputs(args.inputs)
    results = classify_files(classifier, paths, top_k=args.top_k, batch_size=args.batch_size)

    def as_text(result) -> str:
        return "\n".join([f"{result.path}:", *(f"  {p:.4f}  {c.names}" for c, p in result.top)])

    return _print_results(results, args.format, as_text)


def run_evaluate(args) -> int:
    from captioner.config import TrainConfig
    from captioner.data.dataset import check_image_files, select_split
    from captioner.data.formats import load_dataset
    from captioner.evaluation.evaluate_split import ALL_COCO_METRICS, evaluate_split
    from captioner.evaluation.metrics import format_report

    run_dir = Path(args.model)
    if args.ensemble and not args.out:
        raise UsageError("--ensemble needs --out: the scores are not those of --model alone")
    config = TrainConfig.load(run_dir / "config.json")
    data = args.data or config.data or str(Path(config.synthetic_dir) / "dataset.json")
    images = args.images if args.data else (args.images or config.images)
    if not Path(data).exists():
        raise UsageError(f"{data}: no such dataset file")
    records, _ = load_dataset(data, images, warn=_warn)
    records = [r for r in select_split(records, args.split) if r.captions]
    if not records:
        raise UsageError(f"{data}: no {args.split} images with captions")
    records = check_image_files(records, source=data, skip_missing=args.skip_missing, warn=_warn)
    # After the dataset checks: they are faster.
    captioner = _load_captioner(args, "evaluate")
    out = Path(args.out) if args.out else run_dir / args.split
    coco = [m.strip() for m in args.coco_metrics.split(",") if m.strip() not in ("", "none")]
    unknown = sorted(set(coco) - set(ALL_COCO_METRICS))
    if unknown:
        raise UsageError(f"unknown --coco-metrics {unknown}; choose from {ALL_COCO_METRICS}")
    features = None
    if args.feature_cache:
        from captioner.data.feature_cache import cached_features

        features, unreadable = cached_features(
            captioner.model, records, args.feature_cache, label=config.encoder
        )
        if len(unreadable):
            features = None  # decoding the images reports the unreadable ones
    metrics = evaluate_split(
        captioner,
        records,
        split=args.split,
        features=features,
        out_dir=out,
        batch_size=args.batch_size,
        extra={"model": " + ".join([str(run_dir), *args.ensemble]), "dataset": str(data)},
        coco_metrics=coco,
        tokenizer=args.coco_tokenizer,
        on_error=lambda message: print(f"captioner: {message}", file=sys.stderr),
        report=args.report,
        run_dir=run_dir,
    )
    print(format_report(metrics))
    print(f"written to {out}")
    if args.report:
        print(f"report: {out / 'report.html'}")
    return EXIT_SOME_FAILED if metrics["num_unreadable_images"] else EXIT_OK


def run_export(args) -> int:
    from captioner.inference.export import export_model

    captioner = _load_captioner(args, "export")
    formats = ("savedmodel", "tflite") if args.format == "both" else (args.format,)
    for path in export_model(captioner, args.out, formats=formats):
        print(path)
    return EXIT_OK


COMMANDS = {
    "synth": run_synth,
    "train": run_train,
    "caption": run_caption,
    "classify": run_classify,
    "evaluate": run_evaluate,
    "export": run_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command != "synth":
            start_tensorflow(verbose=args.debug)
        return COMMANDS[args.command](args)
    except (UsageError, CaptionerError, OSError, ValueError) as error:
        # User errors (bad files, full disks, wrong arguments): one line; --debug re-raises.
        if args.debug:
            raise
        print(f"captioner: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
