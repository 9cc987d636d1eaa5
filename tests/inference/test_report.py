"""Tests for captioner.inference.report: the data the page holds, its offline-ness, and the
page itself in headless Chromium (clicking words, sorting, filtering)."""

from __future__ import annotations

import base64
import io
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from captioner.inference.captioner import Caption
from captioner.inference.report import (
    ReportItem,
    curves_svg,
    encode_maps,
    item_data,
    run_summary,
    write_report,
)
from tests.browser import missing_browser, quit_chromium, start_chromium

GRID = (4, 4)
CORNERS = {"top_left": (0, 0), "bottom_right": (3, 3), "top_right": (0, 3)}
HISTORY = [
    {"epoch": 1, "loss": 1.3, "xent": 1.3, "penalty": 50.0, "lr": 1e-3, "val_bleu4": 64.6},
    {"epoch": 2, "loss": 0.4, "xent": 0.4, "penalty": 50.0, "lr": 5e-4, "val_bleu4": 83.2},
]
METRICS = {
    "bleu1": 80.0,
    "bleu4": 45.0,
    "cider": None,
    "not_computed": {"cider": "install the coco extra"},
    "object_accuracy": 66.7,
    "object_accuracy_by_count": {"1": 66.7},
    "split": "test",
    "decoding": "greedy",
    "beam_size": 1,
    "num_images": 3,
    "model": "runs/tiny",
    "dataset": "data/tiny/dataset.json",
}


def peak_at(corner: str) -> np.ndarray:
    """A (4, 4) map with nearly all its weight in one corner cell."""
    alpha = np.full(GRID, 0.01)
    alpha[CORNERS[corner]] = 1.0
    return alpha / alpha.sum()


def make_items(root) -> list[ReportItem]:
    """Three grey 128 px scenes captioned "a red square": "red" looks at the top left
    corner, "square" at the bottom right; BLEU-4 40, 5 and 90; a fourth image is missing."""
    items = []
    for i, (bleu, reference) in enumerate(
        ((40.0, "a red square"), (5.0, "a blue kite"), (90.0, "a red box"))
    ):
        path = root / f"scene{i}.png"
        Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(path)
        maps = np.stack([peak_at("top_right"), peak_at("top_left"), peak_at("bottom_right")])
        caption = Caption(
            ["a", "red", "square"], -1.0, maps.astype(np.float32), np.array([0.9, 0.5, 0.25])
        )
        items.append(
            ReportItem(
                path,
                caption,
                references=[reference, "there is one shape"],
                scores={"bleu4": bleu, "objects_correct": i != 1, "pointing_accuracy": 100.0},
                objects=[{"name": "square", "attributes": ["red"], "bbox": [96, 96, 32, 32]}],
                grounding=[
                    {"word": "square", "index": 2, "status": "matched", "object": 0, "hit": True}
                ],
                image_id=i,
            )
        )
    items.append(ReportItem(root / "gone.png", None, error="the image could not be read"))
    return items


def page_json(path) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S
    )
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    page = write_report(
        root / "out" / "report.html",
        make_items(root),
        title="test split of data/tiny/dataset.json",
        metrics=METRICS,
        run={"model": {"run directory": "runs/tiny"}, "history": HISTORY},
    )
    return root, page


def test_encode_maps_scales_every_map_to_its_peak():
    maps = np.stack([peak_at("top_left"), np.zeros(GRID), np.full(GRID, 1 / 16)])
    packed, peaks = encode_maps(maps)
    grid = np.frombuffer(base64.b64decode(packed), np.uint8).reshape(3, *GRID)
    assert peaks == [round(1 / 1.15, 4), 0.0, 0.0625]
    assert grid[0, 0, 0] == 255 and grid[0, 3, 3] == round(255 * 0.01)
    assert not grid[1].any() and (grid[2] == 255).all()


def test_item_data_holds_words_maps_scores_boxes_and_marks(tmp_path):
    item = make_items(tmp_path)[0]
    data = item_data(item, 7, "report_images/00007.jpg", (64, 64), (128, 128))
    assert data["index"] == 7 and data["id"] == 0 and data["path"] == str(item.path)
    assert data["thumb"] == "report_images/00007.jpg" and data["size"] == [64, 64]
    assert data["words"] == ["a", "red", "square"] and data["grid"] == [4, 4]
    assert data["betas"] == [0.9, 0.5, 0.25]
    grid = np.frombuffer(base64.b64decode(data["maps"]), np.uint8).reshape(3, *GRID)
    assert [np.unravel_index(g.argmax(), GRID) for g in grid] == [(0, 3), (0, 0), (3, 3)]
    assert data["refs"] == ["a red square", "there is one shape"]
    assert data["scores"] == {"bleu4": 40.0, "objects_correct": 1.0, "pointing_accuracy": 100.0}
    assert data["objects"] == [{"label": "red square", "box": [0.75, 0.75, 0.25, 0.25]}]
    assert data["marks"] == [{"i": 2, "status": "matched", "object": 0, "hit": True}]
    assert "missing" not in data and "error" not in data
    json.dumps(data)  # plain JSON types only


def test_report_page_data_names_missing_images(report):
    root, page = report
    data = page_json(page)
    assert [s["key"] for s in data["scores"]] == ["bleu4", "objects_correct", "pointing_accuracy"]
    items = data["items"]
    assert [i["index"] for i in items] == [0, 1, 2, 3]
    for item in items[:3]:
        thumb = page.parent / item["thumb"]
        assert thumb.is_file() and item["thumb"].startswith("report_images/")
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and image.size == tuple(item["size"]) == (128, 128)
    assert "thumb" not in items[3] and "words" not in items[3]
    assert items[3]["missing"] == f"{root / 'gone.png'}: no such file"
    assert items[3]["error"] == "the image could not be read"


def test_report_page_loads_nothing_from_outside(report):
    _, page = report
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"https?:", text, re.I)
    assert not re.search(
        r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)""", text, re.I
    )
    assert not re.search(r"""url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)""", text, re.I)
    assert "<link" not in text and "@import" not in text and "fetch(" not in text
    assert "<iframe" not in text and "XMLHttpRequest" not in text
    assert "</script>" not in page_json(page).__repr__()
    for item in page_json(page)["items"]:
        assert "thumb" not in item or not re.match(r"[a-z]+:|/", item["thumb"])


def test_report_header_has_metrics_model_and_curves(report):
    _, page = report
    text = page.read_text(encoding="utf-8")
    assert "<title>test split of data/tiny/dataset.json</title>" in text
    assert '<span class="k">bleu4</span><span class="v">45.00</span>' in text
    assert '<span class="k">object_accuracy_by_count[1]</span>' in text
    assert 'title="install the coco extra"' in text  # cider: not computed, and why
    assert '<span class="k">decoding</span><span class="v">greedy</span>' in text
    assert '<span class="k">run directory</span>' in text
    assert text.count("<svg") == 3  # loss, validation, learning rate


def test_report_text_is_escaped(tmp_path):
    item = make_items(tmp_path)[0]
    item.references = ["</script><script>alert(1)</script>"]
    page = write_report(tmp_path / "r.html", [item], title="<b>x</b>", metrics={"dataset": "<i>"})
    text = page.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<b>x</b>" not in text and "<i>" not in text
    assert page_json(page)["items"][0]["refs"] == item.references
    assert (tmp_path / "r_images" / "00000.jpg").is_file()


def test_curves_and_run_summary(tmp_path):
    assert curves_svg([]) == ""
    svg = curves_svg(HISTORY)
    assert "val_bleu4" in svg and "xent" in svg and "penalty" not in svg  # weight 0: left out
    weighted = [{**row, "loss": row["xent"] + 0.1, "penalty": 5.0} for row in HISTORY]
    assert "penalty" in curves_svg(weighted)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "encoder": "small_cnn",
                "image_size": 64,
                "embed_dim": 8,
                "units": 16,
                "attention_dim": 8,
            }
        )
    )
    (tmp_path / "history.json").write_text(json.dumps(HISTORY))
    summary = run_summary(tmp_path)
    assert summary["history"] == HISTORY
    assert summary["model"]["encoder"] == "small_cnn" and summary["model"]["epochs trained"] == 2
    assert summary["model"]["decoder"] == "embedding 8, LSTM 16, attention 8"
    assert run_summary(tmp_path / "nothing") == {
        "model": {"run directory": str(tmp_path / "nothing")},
        "history": [],
    }


# --- the page in a real browser ---------------------------------------------------------

needs_browser = pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))


@pytest.fixture(scope="module")
def browser(report):
    _, page = report
    driver = start_chromium()
    try:
        driver.get(page.as_uri())
        wait_until(driver, "return document.body.dataset.ready === 'true'")
        yield driver
    finally:
        quit_chromium(driver)


def wait_until(driver, script: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(script)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.05)
    return value


def card_indices(driver) -> list[int]:
    return driver.execute_script(
        "return [...document.querySelectorAll('article.card')].map(c => +c.dataset.index)"
    )


def overlay_colour(driver, card, corner: str) -> np.ndarray:
    """Mean RGB of the card's photo and overlay, as shown, in the corner cell of the grid."""
    figure = card.find_element("css selector", ".figure")
    shot = np.asarray(Image.open(io.BytesIO(figure.screenshot_as_png)).convert("RGB"), float)
    height, width = shot.shape[:2]
    row, col = CORNERS[corner]
    cell = shot[
        row * height // 4 : (row + 1) * height // 4, col * width // 4 : (col + 1) * width // 4
    ]
    return cell[
        cell.shape[0] // 4 : -cell.shape[0] // 4, cell.shape[1] // 4 : -cell.shape[1] // 4
    ].mean(axis=(0, 1))


@needs_browser
def test_page_loads_from_file_without_console_errors_and_shows_every_image(browser):
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert card_indices(browser) == [0, 1, 2, 3]
    wait_until(browser, "return [...document.images].every(i => i.complete)")
    sizes = browser.execute_script(
        "return [...document.images].map(i => [i.naturalWidth, i.naturalHeight])"
    )
    assert sizes == [[128, 128]] * 3
    missing = browser.find_elements("css selector", "article.card .missing")
    assert (
        len(missing) == 1 and "image missing:" in missing[0].text and "gone.png" in missing[0].text
    )


@needs_browser
def test_clicking_a_word_shows_its_map_over_the_photo(browser):
    card = browser.find_elements("css selector", "article.card")[0]
    words = card.find_elements("css selector", "button.word")
    plain = overlay_colour(browser, card, "top_left")
    assert abs(plain - 128).max() < 3  # no overlay yet: the grey photo

    words[1].click()  # "red": its map peaks in the top left cell
    top_left, bottom_right = (
        overlay_colour(browser, card, c) for c in ("top_left", "bottom_right")
    )
    assert top_left[0] > top_left[2] + 50  # jet's high end: red over blue
    assert bottom_right[2] > bottom_right[0] + 50  # low attention: blue
    assert "β = 0.50" in card.find_element("css selector", ".beta").text

    words[2].click()  # "square": bottom right
    top_left, bottom_right = (
        overlay_colour(browser, card, c) for c in ("top_left", "bottom_right")
    )
    assert bottom_right[0] > bottom_right[2] + 50
    assert top_left[2] > top_left[0] + 50
    assert "pinned" in words[2].get_attribute("class")
    words[2].click()  # unpinned


@needs_browser
def test_play_steps_through_the_words(browser):
    card = browser.find_elements("css selector", "article.card")[1]
    card.find_element("css selector", "button.play").click()
    script = (
        "return [...document.querySelectorAll('article.card')[1]"
        ".querySelectorAll('button.word')].findIndex(b => b.classList.contains('active'))"
    )
    wait_until(browser, script.replace("return ", "return 2 === "), timeout=5)
    wait_until(browser, "return !document.querySelector('button.play.on')", timeout=5)


@needs_browser
def test_sorting_puts_the_lowest_score_first_and_filter_hides_the_rest(browser):
    from selenium.webdriver.support.ui import Select

    sort = Select(browser.find_element("id", "sort"))
    sort.select_by_value("bleu4:asc")
    assert card_indices(browser) == [1, 0, 2, 3]  # BLEU-4 5, 40, 90; the unscored last
    sort.select_by_value("bleu4:desc")
    assert card_indices(browser) == [2, 0, 1, 3]
    sort.select_by_value("objects_correct:asc")
    assert card_indices(browser)[0] == 1

    box = browser.find_element("id", "filter")
    box.send_keys("kite")  # only in the references of image 1
    wait_until(browser, "return document.querySelectorAll('article.card').length === 1")
    assert card_indices(browser) == [1]
    assert "1 of 4 images" in browser.find_element("id", "count").text
    box.clear()
    box.send_keys("RED")  # caption words match too, whatever the case
    wait_until(browser, "return document.querySelectorAll('article.card').length === 3")
    sort.select_by_value("")
    box.clear()
    box.send_keys(" ")
    wait_until(browser, "return document.querySelectorAll('article.card').length === 4")
    assert card_indices(browser) == [0, 1, 2, 3]


@needs_browser
def test_a_thumbnail_gone_from_the_folder_is_named_on_the_page(browser, tmp_path):
    items = make_items(tmp_path)[:2]
    page = write_report(tmp_path / "moved.html", items, title="moved")
    (tmp_path / "moved_images" / "00001.jpg").unlink()
    browser.get(page.as_uri())  # the last test of the module: it leaves the shared page
    wait_until(browser, "return document.querySelectorAll('article.card .missing').length === 1")
    missing = browser.find_element("css selector", "article.card .missing").text
    assert f"image missing: {items[1].path}" in missing and "moved_images/00001.jpg" in missing
    assert len(browser.find_elements("css selector", ".figure img")) == 1
