"""How fast the evaluation report page opens at the size of a real test split.

    PYTHONPATH=. python benchmarks/report_load.py [--images 5000] [--loads 3] [--keep DIR]

Generates a synthetic test split of `--images` images (128 px, `captioner synth`'s
generator), gives every image a made-up caption (its first reference) with one random
peaked 8x8 attention map per word, random betas and random per-image scores, writes the
report page with `captioner.inference.report.write_report` (timed: thumbnails included), and
opens it from file:// in headless Chromium `--loads` times, each in a fresh browser. Prints,
as the median over the loads, the milliseconds from navigation start to DOMContentLoaded,
to the load event and to the first gallery paint (the page's `gallery-painted` mark); the
time to re-sort the whole split by BLEU-4 and to draw one word's map; the frame times while
scrolling 100 px a frame (a fast flick, 6,000 px/s at 60 frames/s) and 500 px a frame; and
the page's size (HTML, thumbnails).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from captioner.data.dataset import select_split  # noqa: E402
from captioner.data.karpathy import load_karpathy  # noqa: E402
from captioner.data.synthetic import generate_dataset  # noqa: E402
from captioner.inference.captioner import Caption  # noqa: E402
from captioner.inference.report import ReportItem, images_folder, write_report  # noqa: E402
from tests.browser import missing_browser, quit_chromium, start_chromium  # noqa: E402

GRID = (8, 8)

TIMINGS = """
const t = performance.timing, start = t.navigationStart;
const painted = performance.getEntriesByName("gallery-painted")[0];
return {
  dom: t.domContentLoadedEventEnd - start,
  load: t.loadEventEnd - start,
  painted: painted ? painted.startTime : null,
  cards: document.querySelectorAll("article.card").length,
};
"""
SORT = """
const select = document.getElementById("sort");
const started = performance.now();
select.value = "bleu4:asc";
select.dispatchEvent(new Event("change"));
const sorted = performance.now() - started;
const word = document.querySelector("article.card button.word");
const drawn = performance.now();
word.click();
return {sort: sorted, word: performance.now() - drawn};
"""
SCROLL = """
const [pixels, count, done] = arguments;
const frames = [];
let last = performance.now(), steps = 0;
window.scrollTo(0, 0);
function step(now) {
  frames.push(now - last);
  last = now;
  window.scrollBy(0, pixels);
  if (++steps < count) requestAnimationFrame(step);
  else done({frames: frames.slice(1), cards: document.querySelectorAll("article.card").length});
}
requestAnimationFrame(step);
"""
SCROLLS = ((100, 300), (500, 120))  # (pixels a frame, frames): a fast flick, and far faster


def fake_items(records, seed: int = 0) -> list[ReportItem]:
    """Every record captioned with its first reference, random peaked maps and scores."""
    rng = np.random.default_rng(seed)
    items = []
    for record in records:
        words = list(record.captions[0])
        logits = rng.normal(0.0, 1.0, (len(words), *GRID))
        peaks = rng.integers(0, GRID[0] * GRID[1], len(words))
        logits.reshape(len(words), -1)[np.arange(len(words)), peaks] += 5.0
        alphas = np.exp(logits) / np.exp(logits).sum(axis=(1, 2), keepdims=True)
        caption = Caption(words, -1.0, alphas.astype(np.float32), rng.uniform(0, 1, len(words)))
        items.append(
            ReportItem(
                record.path,
                caption,
                references=[" ".join(c) for c in record.captions],
                scores={
                    "bleu4": float(rng.uniform(0, 100)),
                    "objects_correct": bool(rng.random() < 0.9),
                    "pointing_accuracy": float(rng.choice([0.0, 50.0, 100.0])),
                },
                objects=record.objects,
                image_id=record.image_id,
            )
        )
    return items


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def measure(root: Path, args: argparse.Namespace) -> None:
    """Writes the split and its page under `root`, then opens the page `args.loads` times."""
    dataset = root / "synthetic" / "dataset.json"
    if not dataset.exists():
        started = time.perf_counter()
        generate_dataset(root / "synthetic", num_train=0, num_val=0, num_test=args.images)
        print(f"synthetic test split of {args.images} images: {time.perf_counter() - started:.1f}s")
    records = select_split(load_karpathy(dataset), "test")[: args.images]
    items = fake_items(records)
    page = root / "report" / "report.html"
    started = time.perf_counter()
    write_report(page, items, title=f"{len(items)} synthetic test images")
    written = time.perf_counter() - started
    html_mb = page.stat().st_size / 2**20
    thumbs_mb = folder_mb(images_folder(page))
    print(f"report written in {written:.1f}s: {page}")
    print(f"page: {html_mb:.1f} MB HTML, {thumbs_mb:.1f} MB of {len(items)} thumbnails")

    loads, actions = [], []
    frames: dict[int, list[float]] = {pixels: [] for pixels, _ in SCROLLS}
    cards: dict[int, int] = {}
    for _ in range(args.loads):
        driver = start_chromium(1400, 1000)
        try:
            driver.get(page.as_uri())
            while not driver.execute_script("return document.body.dataset.ready === 'true'"):
                time.sleep(0.02)
            loads.append(driver.execute_script(TIMINGS))
            actions.append(driver.execute_script(SORT))
            driver.set_script_timeout(120)
            for pixels, count in SCROLLS:
                scrolled = driver.execute_async_script(SCROLL, pixels, count)
                frames[pixels] += scrolled["frames"]
                cards[pixels] = scrolled["cards"]
            severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            if severe:
                print(f"console errors: {severe}")
        finally:
            quit_chromium(driver)

    def median(rows, key):
        return statistics.median(row[key] for row in rows)

    print(f"\nmedian of {args.loads} loads from file:// in headless Chromium (ms):")
    print(f"  DOMContentLoaded       {median(loads, 'dom'):8.0f}")
    print(f"  load event             {median(loads, 'load'):8.0f}")
    print(f"  first gallery paint    {median(loads, 'painted'):8.0f}  ({loads[0]['cards']} cards)")
    print(f"  sort {len(items)} by BLEU-4  {median(actions, 'sort'):8.0f}")
    print(f"  draw one word's map    {median(actions, 'word'):8.1f}")
    for pixels, count in SCROLLS:
        times = sorted(frames[pixels])
        p95 = times[int(0.95 * (len(times) - 1))]
        print(
            f"  scrolling {pixels} px a frame for {count} frames ({cards[pixels]} cards drawn by "
            f"then): frame median {statistics.median(times):.1f}, 95th percentile {p95:.1f}, "
            f"longest {times[-1]:.1f}"
        )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--keep", help="write the dataset and the page here (default: a temp dir)")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        raise SystemExit(f"no headless browser: {reason}")

    if args.keep:
        measure(Path(args.keep), args)
    else:
        with tempfile.TemporaryDirectory(prefix="report-load-") as folder:
            measure(Path(folder), args)


if __name__ == "__main__":
    main()
