"""The caption files people download: formats told apart, splits, one clear error each."""

import json

import pytest

from captioner.data.formats import load_dataset, seeded_split
from captioner.errors import DatasetError

CAPTIONS = {
    "a.jpg": ["A dog runs .", "The dog, running!"],
    "b.jpg": ["A cat sleeps ."],
    "c.jpg": ["Two birds fly ."],
    "d.jpg": ["A man rides a bike ."],
}


def _token_lines(captions=CAPTIONS):
    return [f"{name}#{k}\t{raw}" for name, raws in captions.items() for k, raw in enumerate(raws)]


def _write_flickr8k(folder, lines=None, lists=None):
    """A tiny Flickr8k_text folder: the token file and the three split lists."""
    folder.mkdir(parents=True, exist_ok=True)
    token = folder / "Flickr8k.token.txt"
    token.write_text("\n".join(lines if lines is not None else _token_lines()) + "\n")
    lists = lists or {"train": ["a.jpg", "b.jpg"], "dev": ["c.jpg"], "test": ["d.jpg"]}
    for split, names in lists.items():
        (folder / f"Flickr_8k.{split}Images.txt").write_text("".join(f"{n}\n" for n in names))
    return token


def _load(path, images_root="imgs", **kwargs):
    warnings = []
    records, info = load_dataset(path, images_root, warn=warnings.append, **kwargs)
    return records, info, warnings


def _error(path, images_root="imgs", **kwargs):
    with pytest.raises(DatasetError) as error:
        load_dataset(path, images_root, warn=lambda line: None, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_flickr8k_token_file_with_its_split_lists(tmp_path):
    token = _write_flickr8k(tmp_path / "Flickr8k_text")
    for path in (token, token.parent):  # the file or its folder
        records, info, warnings = _load(path, tmp_path / "photos")
        assert [(r.image_id, r.path, r.split) for r in records] == [
            (0, tmp_path / "photos" / "a.jpg", "train"),
            (1, tmp_path / "photos" / "b.jpg", "train"),
            (2, tmp_path / "photos" / "c.jpg", "val"),
            (3, tmp_path / "photos" / "d.jpg", "test"),
        ]
        assert records[0].captions == [["a", "dog", "runs"], ["the", "dog", "running"]]
        assert (info.format, info.source, info.default_images_root) == ("flickr8k", token, None)
        assert "Flickr_8k.devImages.txt" in info.split_source
        assert warnings == []


def test_flickr8k_needs_its_images_folder(tmp_path):
    token = _write_flickr8k(tmp_path)
    message = _error(token, images_root=None)
    assert message.startswith(f"{token}: ")
    assert "--images" in message and "Flicker8k_Dataset" in message


def test_images_in_no_split_list_are_dropped_with_a_warning(tmp_path):
    lines = [*_token_lines(), "e.jpg#0\tA red car .", "f.jpg#0\tA blue car ."]
    records, _, warnings = _load(_write_flickr8k(tmp_path, lines))
    assert [r.path.name for r in records] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert warnings == [
        f"{tmp_path / 'Flickr8k.token.txt'}: 2 captioned images in no split list (dropped): "
        "e.jpg, f.jpg"
    ]


def test_a_malformed_line_is_a_warning_with_its_line_number(tmp_path):
    lines = _token_lines()
    lines[2] = "b.jpg#0 A cat sleeps ."  # a space, not a tab
    lines.insert(4, "d.jpg\tA man on a bike .")  # no caption number
    records, _, warnings = _load(_write_flickr8k(tmp_path, lines))
    assert [(r.path.name, len(r.captions)) for r in records] == [
        ("a.jpg", 2),
        ("c.jpg", 1),
        ("d.jpg", 1),
    ]
    token = tmp_path / "Flickr8k.token.txt"
    assert warnings[:2] == [
        f"{token}: 1 lines without a tab (dropped): line 3 (no tab between image and caption)",
        f"{token}: 1 lines with a bad caption id (dropped): line 5 ('d.jpg' is not NAME#NUMBER)",
    ]
    # b.jpg lost its only caption: named in the train list, it has none left
    assert (
        "1 images without captions in Flickr8k.token.txt (dropped): line 2 (b.jpg)" in (warnings[2])
    )


def test_a_mostly_malformed_file_is_refused_naming_the_first_bad_line(tmp_path):
    lines = ["a.jpg#0\tA dog runs .", "a.jpg#1 A dog .", "b.jpg#0 A cat .", "c.jpg#0 A bird ."]
    token = _write_flickr8k(tmp_path, lines)
    message = _error(token)
    assert message == (f"{token}:2: no tab between image and caption (3 of 4 lines malformed)")


def test_empty_captions_and_duplicate_ids_are_dropped(tmp_path):
    lines = [*_token_lines(), "a.jpg#0\tA dog again .", "c.jpg#5\t . !"]
    records, _, warnings = _load(_write_flickr8k(tmp_path, lines))
    assert len(records[0].captions) == 2 and len(records[2].captions) == 1
    assert any("1 duplicate caption ids (the first kept): line 6 (a.jpg#0)" in w for w in warnings)
    assert any("1 empty captions (dropped): line 7" in w for w in warnings)


@pytest.mark.parametrize("missing", ["dev", "test"])
def test_a_missing_split_list_is_refused(tmp_path, missing):
    token = _write_flickr8k(tmp_path)
    (tmp_path / f"Flickr_8k.{missing}Images.txt").unlink()
    message = _error(token)
    assert message.startswith(f"{token}: split list Flickr_8k.{missing}Images.txt not found")


def test_no_split_lists_at_all_is_refused_for_flickr8k(tmp_path):
    token = _write_flickr8k(tmp_path)
    for path in tmp_path.glob("*Images.txt"):
        path.unlink()
    assert "Flickr_8k.trainImages.txt, Flickr_8k.devImages.txt" in _error(token)


def test_a_split_list_of_another_dataset_is_refused(tmp_path):
    lists = {"train": ["a.jpg", "b.jpg"], "dev": ["x.jpg", "y.jpg", "c.jpg"], "test": ["d.jpg"]}
    _write_flickr8k(tmp_path, lists=lists)
    message = _error(tmp_path)
    assert message.startswith(f"{tmp_path / 'Flickr_8k.devImages.txt'}:1: x.jpg has no captions")
    assert "2 of 3 listed images" in message


def test_overlapping_split_lists_are_refused(tmp_path):
    lists = {"train": ["a.jpg", "b.jpg"], "dev": ["c.jpg"], "test": ["\n", "d.jpg", "a.jpg"]}
    _write_flickr8k(tmp_path, lists=lists)
    assert _error(tmp_path) == (
        f"{tmp_path / 'Flickr_8k.testImages.txt'}:4: a.jpg is also in "
        "Flickr_8k.trainImages.txt:1 (the splits must not overlap)"
    )


def test_an_empty_split_list_is_refused(tmp_path):
    _write_flickr8k(tmp_path, lists={"train": ["a.jpg"], "dev": [], "test": ["d.jpg"]})
    assert _error(tmp_path) == f"{tmp_path / 'Flickr_8k.devImages.txt'}: empty split list"


def test_non_utf8_bytes_are_refused_naming_the_line(tmp_path):
    token = tmp_path / "Flickr8k.token.txt"
    _write_flickr8k(tmp_path)
    token.write_bytes(b"a.jpg#0\tA dog .\nb.jpg#0\tA caf\xe9 .\n")
    assert "not UTF-8 text (byte 0xe9 at line 2 column 14)" in _error(token)


def test_flickr30k_token_file_gets_a_seeded_split(tmp_path):
    token = tmp_path / "results_20130124.token"
    token.write_text("\n".join(_token_lines()) + "\n")
    records, info, warnings = _load(token)
    assert info.format == "flickr30k" and info.split_source == "seeded split (seed 0)"
    assert sorted(r.split for r in records) == ["test", "train", "train", "val"]
    assert warnings == [
        f"no split in {token}: made a seeded split (seed 0): 2 train / 1 val / 1 test"
    ]
    assert "--images" in _error(token, images_root=None)


def test_flickr30k_token_file_uses_split_lists_beside_it(tmp_path):
    token = tmp_path / "results_20130124.token"
    token.write_text("\n".join(_token_lines()) + "\n")
    for split, names in {"train": "a.jpg b.jpg c.jpg", "dev": "d.jpg", "test": ""}.items():
        (tmp_path / f"flickr30k_{split}Images.txt").write_text(names.replace(" ", "\n"))
    assert "empty split list" in _error(token)
    (tmp_path / "flickr30k_testImages.txt").write_text("c.jpg\n")
    (tmp_path / "flickr30k_trainImages.txt").write_text("a.jpg\nb.jpg\n")
    records, info, warnings = _load(token)
    assert [r.split for r in records] == ["train", "train", "test", "val"]
    assert info.split_source.startswith("split lists") and warnings == []


def _write_csv(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Images").mkdir(exist_ok=True)
    path = folder / "captions.txt"
    path.write_text(text)
    return path


CSV_TEXT = (
    "image,caption\n"
    'a.jpg,"A dog, brown, runs ."\n'
    'a.jpg,"A dog says ""woof"" ."\n'
    "b.jpg,A cat sleeps .\n"
    "c.jpg,Two birds fly .\n"
    "d.jpg,A man rides a bike .\n"
)


def test_kaggle_captions_csv_with_quoted_commas(tmp_path):
    path = _write_csv(tmp_path, CSV_TEXT)
    records, info, warnings = _load(path, images_root=None)
    assert info.format == "captions-csv"
    assert info.default_images_root == info.images_root == tmp_path / "Images"
    assert records[0].path == tmp_path / "Images" / "a.jpg"
    assert records[0].captions == [["a", "dog", "brown", "runs"], ["a", "dog", "says", "woof"]]
    assert [w.split(": made")[0] for w in warnings] == [f"no split in {path}"]


def test_csv_line_errors_name_the_line(tmp_path):
    text = CSV_TEXT + "e.jpg\n" + 'f.jpg,"an unclosed\nquote\n'
    path = _write_csv(tmp_path, text)
    records, _, warnings = _load(path)
    assert len(records) == 4
    assert any(
        w == f"{path}: 1 rows with a wrong number of columns (dropped): "
        "line 7 (expected 2 columns, found 1)"
        for w in warnings
    )
    assert any("line 8 (a quoted field runs over 2 lines (unclosed quote?))" in w for w in warnings)


def test_an_unclosed_quote_that_swallows_the_file_is_refused(tmp_path):
    rows = "".join(f"{i}.jpg,A dog number {i} .\n" for i in range(30))
    path = _write_csv(tmp_path, 'image,caption\na.jpg,A dog .\nb.jpg,"A cat .\n' + rows)
    message = _error(path)
    assert message == (
        f"{path}:3: a quoted field runs over 31 lines (unclosed quote?) (31 of 32 lines malformed)"
    )


def test_csv_mostly_broken_or_without_header_is_refused(tmp_path):
    path = _write_csv(tmp_path, "image,caption\na.jpg,A dog .\nb.jpg\nc.jpg\n")
    assert _error(path) == f"{path}:3: expected 2 columns, found 1 (2 of 3 lines malformed)"
    path.write_text("a.jpg,A dog .\n")
    assert _error(path).startswith(f"{path}:1: expected a header with 'image' and 'caption'")


def test_seeded_split_is_deterministic_and_sized_by_the_rule():
    names = [f"{i:05d}.jpg" for i in range(8000)]
    split = seeded_split(names, seed=0)
    assert split == seeded_split(reversed(names), seed=0)  # independent of the file's order
    assert split != seeded_split(names, seed=1)
    counts = {s: list(split.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 6000, "val": 1000, "test": 1000}
    small = seeded_split([f"{i}.jpg" for i in range(50)])
    assert sorted(small.values()).count("val") == 5 and list(small.values()).count("test") == 5
    assert sorted(seeded_split(["a", "b", "c"]).values()) == ["test", "train", "val"]
    assert list(seeded_split(["a", "b"]).values()) == ["train", "train"]


def test_the_split_seed_reaches_the_csv_split(tmp_path):
    rows = "".join(f"{i}.jpg,A dog number {i} .\n" for i in range(30))
    path = _write_csv(tmp_path, "image,caption\n" + rows)
    splits = [[r.split for r in _load(path, split_seed=seed)[0]] for seed in (0, 0, 3)]
    assert splits[0] == splits[1] != splits[2]
    assert _load(path, split_seed=3)[2] == [
        f"no split in {path}: made a seeded split (seed 3): 24 train / 3 val / 3 test"
    ]


def _write_coco(path, annotations=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [
        {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 480},
        {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"},
        {"id": 9, "file_name": "COCO_val2014_000000000009.jpg"},
    ]
    annotations = annotations or [
        {"image_id": 42, "id": 1, "caption": "A giraffe eats leaves."},
        {"image_id": 7, "id": 2, "caption": "A bus on a street."},
        {"image_id": 42, "id": 3, "caption": "A tall giraffe."},
        {"image_id": 5, "id": 4, "caption": "No such image."},
    ]
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


def test_coco_captions_file(tmp_path):
    path = _write_coco(tmp_path / "annotations" / "captions_val2014.json")
    message = _error(path, images_root=None)
    assert "no val2014/ folder" in message and "--images" in message
    (tmp_path / "val2014").mkdir()
    records, info, warnings = _load(path, images_root=None)
    assert info.format == "coco" and info.default_images_root == tmp_path / "val2014"
    assert [(r.image_id, r.path.name, r.split) for r in records] == [
        (42, "COCO_val2014_000000000042.jpg", "val"),
        (7, "COCO_val2014_000000000007.jpg", "val"),
    ]
    assert records[0].path.parent == tmp_path / "val2014"
    assert records[0].captions == [["a", "giraffe", "eats", "leaves"], ["a", "tall", "giraffe"]]
    assert warnings == [
        f"{path}: 1 captions of images not in 'images' (dropped): annotation #3 (5)",
        f"{path}: 1 images without captions (dropped): 9 COCO_val2014_000000000009.jpg",
    ]


def test_coco_train_file_is_the_train_split(tmp_path):
    path = _write_coco(tmp_path / "captions_train2014.json")
    records, _, _ = _load(path, images_root=tmp_path / "train2014")
    assert {r.split for r in records} == {"train"}


def test_coco_file_without_usable_captions_is_refused(tmp_path):
    path = _write_coco(tmp_path / "captions_val2014.json", [{"image_id": "42", "caption": 3}])
    assert _error(path) == (
        f"{path}: no usable images (1 annotations without an integer 'image_id' and a 'caption': "
        "annotation #0; 3 images without captions (dropped): 42 COCO_val2014_000000000042.jpg, "
        "7 COCO_val2014_000000000007.jpg, 9 COCO_val2014_000000000009.jpg)"
    )


def test_karpathy_json_is_read_by_load_karpathy(tmp_path):
    path = tmp_path / "dataset_flickr8k.json"
    images = [
        {"filename": "a.jpg", "imgid": 0, "split": "train", "sentences": [{"raw": "A dog."}]},
        {"filename": "b.jpg", "imgid": 1, "split": "test", "sentences": [{"raw": "A cat."}]},
    ]
    path.write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    records, info, warnings = _load(path, images_root=None)
    assert info.format == "karpathy" and info.default_images_root == tmp_path
    assert [(r.path, r.split, r.captions) for r in records] == [
        (tmp_path / "a.jpg", "train", [["a", "dog"]]),
        (tmp_path / "b.jpg", "test", [["a", "cat"]]),
    ]
    assert warnings == []


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.txt", "just some words\nand more\n"),
        ("data.json", '{"annotations": []}'),
        ("data.json", "[1, 2]"),
    ],
)
def test_unknown_formats_are_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    message = _error(path)
    assert message.startswith(f"{path}: not a known caption format (expected a Karpathy")


def test_empty_and_missing_files_are_refused(tmp_path):
    (tmp_path / "captions.txt").write_text(" \n\n")
    assert _error(tmp_path / "captions.txt") == (
        f"{tmp_path / 'captions.txt'}: empty file, expected caption lines"
    )
    assert _error(tmp_path / "nothing.token") == f"{tmp_path / 'nothing.token'}: no such file"
    (tmp_path / "captions.txt").unlink()
    assert "no caption file in this folder" in _error(tmp_path)
