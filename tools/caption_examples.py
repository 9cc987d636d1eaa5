"""A page of randomly drawn test images with their captions, references and attention maps.

    python tools/caption_examples.py RUN_DIR --data CAPTIONS --images ROOT --out DIR
        [--count 12] [--seed 0] [--beam-size K] [--length-penalty P]
        [--no-repeat-ngram N] [--title TITLE]

Draws `--count` test images with a seeded generator (every image as likely as any other,
so that what works and what does not are both shown), captions them with the run's model
(beam width, length penalty and no-repeat n-gram size: the run's defaults for `captioner
caption` unless given), and writes DIR/README.md with, per image, the caption, two of its
references and the attention figure (DIR/NN.jpg: the photo, then every word's map; JPEG to
keep the page small).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.data.dataset import select_split
from captioner.data.formats import load_dataset
from captioner.data.image_pipeline import resize_images
from captioner.data.images import load_image
from captioner.inference.captioner import Captioner
from captioner.inference.visualize import save_attention
from captioner.runtime import start_tensorflow

FIGURE_WIDTH = 1400  # pixels; the attention figures are scaled down to this at most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--images")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beam-size", type=int, help="default: the run's, as `caption`")
    parser.add_argument("--length-penalty", type=float, help="default: the run's")
    parser.add_argument("--no-repeat-ngram", type=int, help="default: the run's")
    parser.add_argument("--title", default="Test images drawn at random")
    args = parser.parse_args()
    start_tensorflow()

    records, _ = load_dataset(args.data, args.images, warn=lambda line: None)
    test = [r for r in select_split(records, "test") if r.captions]
    rng = np.random.default_rng(args.seed)
    chosen = [test[i] for i in sorted(rng.choice(len(test), args.count, replace=False))]
    captioner = Captioner.from_run_dir(
        args.run_dir,
        decoding_for="caption",
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
        no_repeat_ngram=args.no_repeat_ngram,
    )
    beam_size, length_penalty = captioner.beam_size, captioner.length_penalty
    no_repeat_ngram = captioner.no_repeat_ngram
    photos = [load_image(r.path) for r in chosen]
    captions = captioner.caption(resize_images(photos, captioner.image_size))

    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# {args.title}",
        "",
        f"{args.count} test images drawn with seed {args.seed}; model `{args.run_dir}`, beam "
        f"{beam_size}, length penalty {length_penalty:g}, no repeated {no_repeat_ngram} words "
        f"(0: repeats allowed). Made by `python "
        f"tools/caption_examples.py {args.run_dir} --data {args.data} --images {args.images} "
        f"--out {args.out} --count {args.count} --seed {args.seed} --beam-size {beam_size} "
        f"--length-penalty {length_penalty:g} --no-repeat-ngram {no_repeat_ngram} "
        f"--title '{args.title}'`. Under each word: its "
        "attention map over the "
        "photo and the gate β.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for number, (record, photo, caption) in enumerate(zip(chosen, photos, captions), 1):
            (png,) = save_attention(
                Path(tmp) / f"{number:02d}",
                photo,
                caption.words,
                caption.alphas,
                caption.betas,
                formats=("png",),
            )
            figure = Image.open(png).convert("RGB")
            if figure.width > FIGURE_WIDTH:
                height = round(figure.height * FIGURE_WIDTH / figure.width)
                figure = figure.resize((FIGURE_WIDTH, height), Image.LANCZOS)
            figure.save(args.out / f"{number:02d}.jpg", quality=80)
            references = "; ".join(" ".join(c) for c in record.captions[:2])
            lines += [
                f"**{number}. {record.path.name}**: *{caption.text}*  ",
                f"references: {references}",
                "",
                f"![attention of {record.path.name}]({number:02d}.jpg)",
                "",
            ]
    (args.out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    print(args.out / "README.md")


if __name__ == "__main__":
    main()
