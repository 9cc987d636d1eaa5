"""One HTML page of captioned images: every image with its caption, references, scores and
the attention of every word.

The page is a single file with its CSS, JavaScript and data inline, plus a folder of small
JPEG thumbnails beside it (``report.html`` -> ``report_images/``) referenced relatively, so
that the folder opens from disk (``file://``) with no server and no network. Attention maps
travel as raw grids (one byte per cell, scaled to the map's peak) and are drawn on a canvas
over the photo: upsampled, smoothed and coloured as the attention PNGs are.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from captioner.data.images import ImageLoadError, load_image
from captioner.errors import CaptionerError
from captioner.files import read_json, write_text_atomic
from captioner.inference.caption_files import FileResult
from captioner.inference.captioner import CONFIG_FILE, Caption

__all__ = [
    "REPORT_FILE",
    "ReportItem",
    "item_data",
    "run_summary",
    "write_caption_report",
    "write_report",
]

REPORT_FILE = "report.html"
THUMBNAIL_SIDE = 256  # longest side of a thumbnail, pixels
THUMBNAIL_QUALITY = 85
HISTORY_FILE = "history.json"  # written by training (captioner.training.validation)

# Per-image scores the page can show and sort by, in this order: key -> (label, kind).
SCORES = {
    "bleu4": ("BLEU-4", "number"),
    "cider": ("CIDEr-D", "number"),
    "meteor": ("METEOR", "number"),
    "rouge_l": ("ROUGE-L", "number"),
    "spice": ("SPICE", "number"),
    "objects_correct": ("objects correct", "bool"),
    "pointing_accuracy": ("pointing", "number"),
}
# Metric entries that describe the run rather than score it.
RUN_KEYS = (
    "split",
    "decoding",
    "beam_size",
    "length_penalty",
    "no_repeat_ngram",
    "suppress_unk",
    "max_length",
    "num_images",
    "num_references",
    "num_unreadable_images",
    "seconds",
    "coco_tokenizer",
)
_PLACEHOLDER = re.compile(r"@@(TITLE|HEADER|DATA)@@")


@dataclasses.dataclass
class ReportItem:
    """One image of a report.

    Attributes:
        path: The image file.
        caption: Its generated caption with the attention of every word; None when the
            image could not be captioned (`error` says why).
        references: Reference captions, as text.
        scores: Per-image scores by name (see `SCORES`); None where not scored.
        objects: The scene's objects (``name``, ``attributes``, ``bbox`` as ``[x, y, w, h]``
            in pixels of the original image), if the dataset lists them.
        grounding: The caption's object words and the objects they refer to (the rows of
            `captioner.evaluation.grounding.image_grounding`).
        error: Why the image has no caption.
        image_id: The dataset's id of the image.
    """

    path: Path
    caption: Caption | None = None
    references: list[str] = dataclasses.field(default_factory=list)
    scores: dict[str, float | bool | None] = dataclasses.field(default_factory=dict)
    objects: list[dict] | None = None
    grounding: list[dict] | None = None
    error: str | None = None
    image_id: int | None = None


def encode_maps(alphas: np.ndarray) -> tuple[str, list[float]]:
    """Packs attention maps compactly for the page.

    Args:
        alphas: (T, gh, gw) attention maps.

    Returns:
        ``(maps, peaks)``: the maps as base64 bytes, row-major, each map scaled to 0-255 by
        its own peak; and the peaks (the largest weight of every map), rounded.
    """
    alphas = np.nan_to_num(np.asarray(alphas, dtype=np.float32), nan=0.0, posinf=0.0)
    alphas = np.clip(alphas, 0.0, None)  # (T, gh, gw)
    peaks = alphas.reshape(len(alphas), -1).max(axis=1) if alphas.size else np.zeros(0)
    scale = np.where(peaks > 0, 255.0 / np.maximum(peaks, 1e-30), 0.0)  # (T,)
    quantised = np.rint(alphas * scale[:, None, None]).astype(np.uint8)
    packed = base64.b64encode(quantised.tobytes()).decode("ascii")
    return packed, [round(float(p), 4) for p in peaks]


def _score_value(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return round(float(value), 2)
    return None


def _object_label(obj: Mapping) -> str:
    return " ".join([*(str(a) for a in obj.get("attributes") or ()), str(obj.get("name", ""))])


def item_data(
    item: ReportItem,
    index: int,
    thumbnail: str | None,
    thumbnail_size: tuple[int, int] | None,
    image_size: tuple[int, int] | None,
    missing: str | None = None,
) -> dict:
    """The JSON object the page holds for one image.

    Args:
        item: The image, its caption and scores.
        index: Its position in the report.
        thumbnail: The thumbnail's URL relative to the page (None: no thumbnail).
        thumbnail_size: The thumbnail's ``(width, height)``.
        image_size: The original image's ``(width, height)`` (for the object boxes).
        missing: Why the image cannot be shown (it is named on the page).

    Returns:
        ``index``, ``id``, ``path``, ``thumb``, ``size``, ``missing``, ``error``, ``words``,
        ``betas``, ``grid``, ``maps``, ``peaks`` (see `encode_maps`), ``refs``, ``scores``,
        ``objects`` (label and box as fractions of the image) and ``marks`` (the object
        words: index, status, referred object, pointing hit); empty entries are left out.
    """
    data: dict = {"index": index, "path": str(item.path)}
    if item.image_id is not None:
        data["id"] = item.image_id
    if thumbnail is not None and thumbnail_size is not None:
        data["thumb"] = thumbnail
        data["size"] = [int(v) for v in thumbnail_size]
    if missing is not None:
        data["missing"] = missing
    if item.error is not None:
        data["error"] = item.error
    caption = item.caption
    if caption is not None:
        alphas = np.asarray(caption.alphas)[: len(caption.words)]  # (T, gh, gw)
        data["words"] = list(caption.words)
        data["grid"] = [int(alphas.shape[1]), int(alphas.shape[2])]
        data["maps"], data["peaks"] = encode_maps(alphas)
        if caption.betas is not None:
            betas = np.asarray(caption.betas, dtype=np.float32).reshape(-1)[: len(caption.words)]
            data["betas"] = [round(float(b), 3) for b in betas]
    if item.references:
        data["refs"] = list(item.references)
    scores = {k: _score_value(v) for k, v in item.scores.items() if k in SCORES}
    if scores:
        data["scores"] = scores
    if item.objects and image_size is not None:
        width, height = image_size
        objects = []
        for obj in item.objects:
            entry: dict = {"label": _object_label(obj)}
            if "bbox" in obj:
                x, y, w, h = (float(v) for v in obj["bbox"])
                entry["box"] = [round(x / width, 4), round(y / height, 4)]
                entry["box"] += [round(w / width, 4), round(h / height, 4)]
            objects.append(entry)
        data["objects"] = objects
    if item.grounding:
        data["marks"] = [
            {
                "i": int(row["index"]),
                "status": row["status"],
                **({"object": int(row["object"])} if row.get("object") is not None else {}),
                **({"hit": bool(row["hit"])} if "hit" in row else {}),
            }
            for row in item.grounding
        ]
    return data


def make_thumbnail(
    path: Path, out: Path, side: int = THUMBNAIL_SIDE
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Writes a JPEG thumbnail of an image, at most `side` pixels on its longest side.

    Returns:
        ``(thumbnail (width, height), original (width, height))``.

    Raises:
        ImageLoadError: The image cannot be read (the message names the file and why).
    """
    pixels = load_image(path)  # (H, W, 3) uint8, EXIF orientation applied
    image = Image.fromarray(pixels)
    original = image.size
    image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    image.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return image.size, original


def _number(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _flatten(name: str, value: object, rows: list[tuple[str, object]]) -> None:
    """Appends `value`'s rows, a nested mapping's as ``name[key]`` (as the printed table)."""
    if not isinstance(value, Mapping):
        rows.append((name, value))
        return
    for key, sub in value.items():
        _flatten(f"{name}[{key}]" if name else str(key), sub, rows)


def _table(rows: Sequence[tuple[str, object]], reasons: Mapping[str, str] | None = None) -> str:
    """Name-value rows, in two columns read downwards when there are more than ten."""
    reasons = reasons or {}
    lines = [f'<div class="kv{" two" if len(rows) > 10 else ""}">']
    for name, value in rows:
        reason = reasons.get(name)
        title = f' title="{html.escape(reason)}"' if reason else ""
        lines.append(
            f'<div class="row"{title}><span class="k">{html.escape(name)}</span>'
            f'<span class="v">{html.escape(_number(value))}{" *" if reason else ""}</span></div>'
        )
    lines.append("</div>")
    return "\n".join(lines)


def metrics_tables(metrics: Mapping) -> str:
    """The metrics as two HTML tables: the scores, and the run (split, decoding, counts),
    with the reasons of the metrics not computed underneath."""
    reasons = dict(metrics.get("not_computed") or {})
    scores: list[tuple[str, object]] = []
    run: list[tuple[str, object]] = []
    for key, value in metrics.items():
        if key in ("not_computed", "model", "dataset"):
            continue
        _flatten(key, value, run if key in RUN_KEYS else scores)
    parts = ['<div class="panel scoreboard"><h2>scores</h2>', _table(scores, reasons)]
    if reasons:
        notes = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in reasons.items()
        )
        parts.append(f'<ul class="notes">{notes}</ul>')
    parts.append("</div>")
    parts += ['<div class="panel"><h2>decoding and counts</h2>', _table(run), "</div>"]
    return "\n".join(parts)


def run_summary(run_dir: str | Path) -> dict:
    """What a report shows of the model: its run directory, encoder, sizes and training
    curves, read from ``config.json`` and ``history.json`` (files that are missing or
    unreadable are left out).

    Returns:
        ``{"model": {name: value}, "history": [epoch rows]}``.
    """
    run_dir = Path(run_dir)
    model: dict[str, object] = {"run directory": str(run_dir)}
    try:
        config = read_json(run_dir / CONFIG_FILE)
    except CaptionerError:
        config = {}
    if isinstance(config, dict):
        if config.get("encoder"):
            model["encoder"] = config["encoder"]
        if config.get("image_size"):
            model["image size"] = f"{config['image_size']} px"
        sizes = [config.get(k) for k in ("embed_dim", "units", "attention_dim")]
        if all(isinstance(s, int) for s in sizes):
            model["decoder"] = "embedding {}, LSTM {}, attention {}".format(*sizes)
        if config.get("data"):
            model["training data"] = config["data"]
    try:
        history = read_json(run_dir / HISTORY_FILE)
    except CaptionerError:
        history = []
    history = [row for row in history if isinstance(row, dict)] if isinstance(history, list) else []
    if history:
        model["epochs trained"] = len(history)
    return {"model": model, "history": history}


CURVE_PANELS = (
    ("training loss", ("loss", "xent", "penalty")),
    ("validation", None),  # every val_* entry
    ("learning rate", ("lr",)),
)
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _tick(value: float) -> str:
    return f"{value:.1e}" if 0 < abs(value) < 0.01 else f"{value:.3g}"


def _panel_svg(title: str, series: dict[str, list[tuple[float, float]]]) -> str:
    legend_columns = 2 if max(len(name) for name in series) <= 16 else 1
    legend_rows = math.ceil(len(series) / legend_columns)
    width, left, right, top, plot_h = 236, 50, 8, 22, 90
    bottom = 24 + 13 * legend_rows
    height = top + plot_h + bottom
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-9, y1 + abs(y1) * 0.1 + 1e-9
    plot_w = width - left - right

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [
        f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="14" class="t">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for value in (y0, y1):
        out.append(
            f'<text x="{left - 4}" y="{py(value) + 4:.1f}" class="a" '
            f'text-anchor="end">{_tick(value)}</text>'
        )
    out.append(f'<text x="{left}" y="{top + plot_h + 13}" class="a">{x0:g}</text>')
    out.append(
        f'<text x="{left + plot_w}" y="{top + plot_h + 13}" class="a" '
        f'text-anchor="end">epoch {x1:g}</text>'
    )
    for k, (name, points) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for x, y in points:
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}">'
                f"<title>{html.escape(name)}, epoch {x:g}: {y:.4g}</title></circle>"
            )
        row, col = divmod(k, legend_columns)
        lx, ly = left + col * (plot_w // 2), top + plot_h + 28 + row * 13
        out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly - 3}" class="a">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def curves_svg(history: Sequence[Mapping]) -> str:
    """Inline SVG charts of a run's epoch rows: losses, validation scores, learning rate
    ("" when there is nothing to draw)."""
    rows = [r for r in history if isinstance(r.get("epoch"), (int, float))]
    if not rows:
        return ""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    # The penalty is logged even when its weight is 0; drawn only when the loss holds it.
    weighted = any(abs(r.get("loss", 0.0) - r.get("xent", 0.0)) > 1e-6 for r in rows)
    panels = []
    for title, wanted in CURVE_PANELS:
        names = [k for k in keys if k.startswith("val_")] if wanted is None else list(wanted)
        if not weighted:
            names = [n for n in names if n != "penalty"]
        series = {}
        for name in names:
            points = [
                (float(r["epoch"]), float(r[name]))
                for r in rows
                if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])
            ]
            if points:
                series[name] = points
        if series:
            panels.append(_panel_svg(title, series))
    return "".join(panels)


def _header(title: str, metrics: Mapping | None, run: Mapping | None, settings: Mapping) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>", '<section class="overview">']
    source: list[tuple[str, object]] = []
    if metrics is not None:
        if metrics.get("dataset"):
            source.append(("dataset", metrics["dataset"]))
        if metrics.get("split"):
            source.append(("split", metrics["split"]))
    if run is not None:
        source += list((run.get("model") or {}).items())
    elif metrics is not None and metrics.get("model"):
        source.append(("model", metrics["model"]))
    if metrics is None:
        source += list(settings.items())
    if source:
        parts += ['<div class="panel"><h2>data and model</h2>', _table(source), "</div>"]
    if metrics is not None:
        parts.append(metrics_tables(metrics))
    curves = curves_svg((run or {}).get("history") or [])
    if curves:
        parts.append(f'<div class="panel curves"><h2>training curves</h2>{curves}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _script_json(data: object) -> str:
    """JSON safe inside a <script> element (no "</script>", no "<!--")."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def images_folder(path: Path) -> Path:
    """The thumbnails' folder of a report page: ``report.html`` -> ``report_images``."""
    return path.with_name(f"{path.stem}_images")


def _thumbnails(
    items: Sequence[ReportItem], folder: Path, side: int, workers: int
) -> list[tuple[tuple[int, int], tuple[int, int]] | str]:
    """Every item's thumbnail sizes, or why its image cannot be shown."""

    def one(args: tuple[int, ReportItem]):
        index, item = args
        try:
            return make_thumbnail(Path(item.path), folder / f"{index:05d}.jpg", side)
        except ImageLoadError as error:
            return str(error)
        except OSError as error:  # writing the thumbnail
            return f"{item.path}: cannot write its thumbnail ({error.strerror or error})"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, enumerate(items)))


def page_data(
    items: Sequence[ReportItem],
    thumbnails: Sequence[tuple[tuple[int, int], tuple[int, int]] | str],
    folder_url: str,
) -> dict:
    """The page's data: the score columns present and one `item_data` object per image."""
    present = {k for item in items for k, v in item.scores.items() if v is not None}
    scores = [
        {"key": k, "label": label, "kind": kind}
        for k, (label, kind) in SCORES.items()
        if k in present
    ]
    rows = []
    for index, (item, thumb) in enumerate(zip(items, thumbnails, strict=True)):
        if isinstance(thumb, str):
            rows.append(item_data(item, index, None, None, None, missing=thumb))
        else:
            url = f"{folder_url}/{index:05d}.jpg"
            rows.append(item_data(item, index, url, thumb[0], thumb[1]))
    return {"scores": scores, "items": rows}


def write_report(
    path: str | Path,
    items: Sequence[ReportItem],
    *,
    title: str,
    metrics: Mapping | None = None,
    run: Mapping | None = None,
    settings: Mapping | None = None,
    thumbnail_side: int = THUMBNAIL_SIDE,
    workers: int | None = None,
) -> Path:
    """Writes the report page and its thumbnails.

    Args:
        path: The HTML file; the thumbnails go to the folder beside it named after it
            (``report.html`` -> ``report_images/``).
        items: The images, in the order the page lists them by default.
        title: The page's title.
        metrics: The evaluation's metrics (`evaluate_split`), shown as tables; None for
            captions without references.
        run: The model's `run_summary` (details and training curves), if known.
        settings: The decoding settings, shown when there are no metrics (which hold them).
        thumbnail_side: Longest side of the thumbnails in pixels.
        workers: Threads that make the thumbnails (default: up to 4).

    Returns:
        The page's path. An image that cannot be read is named on the page.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = images_folder(path)
    folder.mkdir(exist_ok=True)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    thumbnails = _thumbnails(items, folder, thumbnail_side, workers)
    data = page_data(items, thumbnails, quote(folder.name))
    template = resources.files("captioner").joinpath("resources/report.html").read_text("utf-8")
    values = {
        "TITLE": html.escape(title),
        "HEADER": _header(title, metrics, run, settings or {}),
        "DATA": _script_json(data),
    }
    write_text_atomic(path, _PLACEHOLDER.sub(lambda m: values[m.group(1)], template))
    return path


def write_caption_report(
    path: str | Path,
    results: Sequence[FileResult],
    run_dir: str | Path,
    settings: Mapping | None = None,
) -> Path:
    """Writes the report page of `captioner caption --html`: the user's images with their
    captions and attention, without references or scores.

    Args:
        path: The HTML file.
        results: The captioned files (`caption_files`), failures included.
        run_dir: The model's run directory.
        settings: The decoding settings.
    """
    items = [ReportItem(Path(r.path), r.caption, error=r.error) for r in results]
    return write_report(
        path,
        items,
        title=f"{len(items)} image{'s' * (len(items) != 1)} captioned by {run_dir}",
        run=run_summary(run_dir),
        settings=settings,
    )
