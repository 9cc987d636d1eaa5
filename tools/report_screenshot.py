"""A screenshot of a report page (the README's docs/report_screenshot.png).

    PYTHONPATH=. python tools/report_screenshot.py runs/synthetic/test/report.html \
        docs/report_screenshot.png [--sort bleu4:asc] [--card 0] [--word 3]

Opens the page from file:// in headless Chromium, sorts the gallery (a value of the page's
sort menu), clicks a word of one card so that its attention map is drawn, and saves the
window as a PNG reduced to 256 colours (small enough for the repository).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from PIL import Image

from tests.browser import missing_browser, quit_chromium, start_chromium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sort", default="", help="e.g. bleu4:asc (default: dataset order)")
    parser.add_argument("--card", type=int, default=0, help="card whose word is clicked")
    parser.add_argument("--word", type=int, default=0, help="word clicked")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--scroll", type=int, default=0, help="pixels scrolled down first")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        raise SystemExit(f"no headless browser: {reason}")
    driver = start_chromium(args.width, args.height)
    try:
        driver.get(args.page.resolve().as_uri())
        while not driver.execute_script("return document.body.dataset.ready === 'true'"):
            time.sleep(0.05)
        if args.sort:
            driver.execute_script(
                "const s = document.getElementById('sort'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('change'));",
                args.sort,
            )
        card = driver.find_elements("css selector", "article.card")[args.card]
        card.find_elements("css selector", "button.word")[args.word].click()
        driver.execute_script("window.scrollTo(0, arguments[0])", args.scroll)
        driver.execute_script("return [...document.images].every(i => i.complete)")
        time.sleep(0.5)
        shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    finally:
        quit_chromium(driver)
    shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {shot.size[0]}x{shot.size[1]}, {args.out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
