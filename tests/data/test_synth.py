"""Tests for the procedural synthetic captioning dataset."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from captioner.data.synthetic import (
    COLOUR_JITTER,
    COLOURS,
    SHAPES,
    SIZES,
    SYNTH_VERSION,
    describe,
    generate_dataset,
    is_current,
    make_scene,
)

COUNTS = {"train": 30, "val": 6, "test": 6}


def _generate(root: pathlib.Path, name: str, seed: int = 0, **counts: int) -> pathlib.Path:
    sizes = {**COUNTS, **counts}
    return generate_dataset(
        root / name,
        num_train=sizes["train"],
        num_val=sizes["val"],
        num_test=sizes["test"],
        seed=seed,
    )


def _load_image(json_path: pathlib.Path, entry: dict) -> np.ndarray:
    with Image.open(json_path.parent / entry["filepath"] / entry["filename"]) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict]:
    json_path = _generate(tmp_path_factory.mktemp("synth"), "a")
    return json_path, json.loads(json_path.read_text())


def _phrase(obj: dict) -> str:
    size, colour = obj["attributes"]
    return f"{size} {colour} {obj['name']}"


def test_reproducible_same_seed(tmp_path: pathlib.Path, dataset: tuple[pathlib.Path, dict]) -> None:
    first, data = dataset
    second = _generate(tmp_path, "b")
    assert first.read_bytes() == second.read_bytes()
    for entry in data["images"]:
        np.testing.assert_array_equal(_load_image(first, entry), _load_image(second, entry))


def test_different_seed_differs(tmp_path: pathlib.Path, dataset: tuple[pathlib.Path, dict]) -> None:
    first, data = dataset
    other = _generate(tmp_path, "c", seed=1)
    assert first.read_bytes() != other.read_bytes()
    other_data = json.loads(other.read_text())
    same = [
        np.array_equal(_load_image(first, a), _load_image(other, b))
        for a, b in zip(data["images"], other_data["images"], strict=True)
    ]
    assert not any(same)


def test_karpathy_format_and_split_counts(dataset: tuple[pathlib.Path, dict]) -> None:
    json_path, data = dataset
    assert data["dataset"] == "synthetic"
    assert data["image_size"] == 128
    assert data["seed"] == 0
    splits = [e["split"] for e in data["images"]]
    assert {s: splits.count(s) for s in COUNTS} == COUNTS
    imgids = [e["imgid"] for e in data["images"]]
    sentids = [s["sentid"] for e in data["images"] for s in e["sentences"]]
    assert len(set(imgids)) == len(imgids)
    assert len(set(sentids)) == len(sentids)
    for entry in data["images"]:
        keys = {"filepath", "filename", "imgid", "split", "sentids", "sentences", "objects"}
        assert keys <= set(entry)
        assert entry["filepath"] == f"images/{entry['split']}"
        assert entry["sentids"] == [s["sentid"] for s in entry["sentences"]]
        for sent in entry["sentences"]:
            assert sent["imgid"] == entry["imgid"]
            assert sent["raw"] == " ".join(sent["tokens"])
    for split, n in COUNTS.items():
        names = [e["filename"] for e in data["images"] if e["split"] == split]
        assert names == [f"{split}_{i:05d}.png" for i in range(n)]


def test_image_files(dataset: tuple[pathlib.Path, dict]) -> None:
    json_path, data = dataset
    for entry in data["images"]:
        path = json_path.parent / entry["filepath"] / entry["filename"]
        assert path.is_file()
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.mode == "RGB"
            assert im.size == (128, 128)


def test_object_counts_and_attributes(dataset: tuple[pathlib.Path, dict]) -> None:
    _, data = dataset
    counts = {len(e["objects"]) for e in data["images"]}
    assert counts == {1, 2, 3}
    for entry in data["images"]:
        centres = []
        for obj in entry["objects"]:
            assert obj["name"] in SHAPES
            size, colour = obj["attributes"]
            assert size in SIZES and colour in COLOURS
            assert len(obj["bbox"]) == 4 and all(isinstance(v, int) for v in obj["bbox"])
            centres.append(obj["bbox"][0] + obj["bbox"][2] / 2)
        assert centres == sorted(centres)
        assert all(b - a >= 0.1 * 128 for a, b in zip(centres, centres[1:], strict=False))


def test_captions_mention_every_object(dataset: tuple[pathlib.Path, dict]) -> None:
    _, data = dataset
    for entry in data["images"]:
        assert len(entry["sentences"]) >= 3
        phrases = [_phrase(o) for o in entry["objects"]]
        for sent in entry["sentences"]:
            assert all(t.isalpha() and t == t.lower() for t in sent["tokens"])
            for phrase in phrases:
                assert phrase in sent["raw"]
        assert [s["tokens"] for s in entry["sentences"]] == describe(entry["objects"])


def test_describe_templates() -> None:
    objs = [
        {"name": "square", "attributes": ["small", "blue"], "bbox": [80, 10, 20, 20]},
        {"name": "circle", "attributes": ["large", "red"], "bbox": [5, 50, 40, 40]},
    ]
    caps = [" ".join(c) for c in describe(objs)]
    assert caps == [
        "a large red circle to the left of a small blue square",
        "from the right a small blue square and a large red circle",
        "there are a large red circle and a small blue square",
    ]
    one = [" ".join(c) for c in describe(objs[:1])]
    assert one == [
        "a small blue square",
        "a single small blue square",
        "there is a small blue square",
    ]
    objs.append({"name": "star", "attributes": ["large", "green"], "bbox": [40, 80, 36, 34]})
    caps = [" ".join(c) for c in describe(objs)]
    assert caps[0] == (
        "a large red circle to the left of a large green star to the left of a small blue square"
    )
    assert caps[1] == "from the right a small blue square a large green star and a large red circle"
    assert caps[2] == "there are a large red circle a large green star and a small blue square"


def test_first_word_settles_the_order(dataset: tuple[pathlib.Path, dict]) -> None:
    # Two captions that begin alike but name the objects in different orders would leave
    # the decoder unable to tell which object comes first (see describe()).
    _, data = dataset
    for entry in data["images"]:
        if len(entry["objects"]) > 1:
            firsts = [sent["tokens"][0] for sent in entry["sentences"]]
            assert len(set(firsts)) == len(firsts)


def test_is_current_tells_old_datasets(tmp_path: pathlib.Path) -> None:
    path = generate_dataset(tmp_path, num_train=1, num_val=0, num_test=0)
    assert is_current(path)
    data = json.loads(path.read_text())
    data["synth_version"] = SYNTH_VERSION - 1
    path.write_text(json.dumps(data))
    assert not is_current(path)
    assert not is_current(tmp_path / "missing.json")


def test_bboxes_inside_and_disjoint(dataset: tuple[pathlib.Path, dict]) -> None:
    _, data = dataset
    for entry in data["images"]:
        boxes = [o["bbox"] for o in entry["objects"]]
        for x, y, w, h in boxes:
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
        for i, (x1, y1, w1, h1) in enumerate(boxes):
            for x2, y2, w2, h2 in boxes[i + 1 :]:
                overlap = x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1
                assert not overlap


def test_bboxes_locate_drawn_objects(dataset: tuple[pathlib.Path, dict]) -> None:
    json_path, data = dataset
    checked = 0
    for entry in data["images"]:
        pixels = _load_image(json_path, entry).astype(int)
        for obj in entry["objects"]:
            x, y, w, h = obj["bbox"]
            if obj["name"] in ("circle", "square", "diamond", "hexagon"):
                centre = pixels[y + h // 2, x + w // 2]
                expected = np.array(COLOURS[obj["attributes"][1]])
                assert np.abs(centre - expected).max() <= COLOUR_JITTER
                checked += 1
            # Every shape covers its box centre with a flat fill, and the box is tight: each edge
            # row and column of the box touches that fill.
            box = pixels[y : y + h, x : x + w]
            fill = (box == pixels[y + h // 2, x + w // 2]).all(axis=2)
            assert fill[0].any() and fill[-1].any() and fill[:, 0].any() and fill[:, -1].any()
            # ...and the shape does not spill outside the box.
            ring = pixels[max(y - 1, 0) : y + h + 1, max(x - 1, 0) : x + w + 1]
            assert (ring == pixels[y + h // 2, x + w // 2]).all(axis=2).sum() == fill.sum()
    assert checked > 0


def test_changing_train_size_keeps_val_and_test(
    tmp_path: pathlib.Path, dataset: tuple[pathlib.Path, dict]
) -> None:
    first, data = dataset
    other = _generate(tmp_path, "d", train=11)
    other_data = json.loads(other.read_text())

    def held_out(d: dict) -> list[dict]:
        return [e for e in d["images"] if e["split"] != "train"]

    a, b = held_out(data), held_out(other_data)
    assert len(a) == len(b) == COUNTS["val"] + COUNTS["test"]
    for ea, eb in zip(a, b, strict=True):
        assert ea["filename"] == eb["filename"]
        assert ea["objects"] == eb["objects"]
        assert [s["tokens"] for s in ea["sentences"]] == [s["tokens"] for s in eb["sentences"]]
        np.testing.assert_array_equal(_load_image(first, ea), _load_image(other, eb))


def test_make_scene_other_size() -> None:
    image, objects = make_scene(np.random.default_rng(3), image_size=64)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert 1 <= len(objects) <= 3
    for x, y, w, h in (o["bbox"] for o in objects):
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64


@pytest.mark.parametrize(
    "kwargs",
    [{"num_train": -1}, {"num_val": -2}, {"num_test": -3}, {"image_size": 32}, {"seed": -1}],
)
def test_invalid_arguments(tmp_path: pathlib.Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, **{"num_train": 1, "num_val": 1, "num_test": 1, **kwargs})


def test_mixed_orders_begin_alike_in_opposite_orders(tmp_path: pathlib.Path) -> None:
    objs = [
        {"name": "circle", "attributes": ["large", "red"], "bbox": [0, 0, 36, 36]},
        {"name": "square", "attributes": ["small", "blue"], "bbox": [90, 10, 20, 20]},
    ]
    caps = [" ".join(c) for c in describe(objs, orders="mixed")]
    assert caps[0] == "a large red circle to the left of a small blue square"
    assert caps[1] == "a small blue square to the right of a large red circle"
    assert caps[2] == "there are a large red circle and a small blue square"
    with pytest.raises(ValueError, match="orders"):
        describe(objs, orders="random")
    settled = generate_dataset(tmp_path / "settled", num_train=3, num_val=0, num_test=0)
    mixed = generate_dataset(tmp_path / "mixed", num_train=3, num_val=0, num_test=0, orders="mixed")
    # the same scenes and images; only the references differ, and the main job's check
    # for its own dataset does not take the mixed one
    a, b = (json.loads(p.read_text()) for p in (settled, mixed))
    assert [e["objects"] for e in a["images"]] == [e["objects"] for e in b["images"]]
    assert is_current(settled) and not is_current(mixed) and b["orders"] == "mixed"
