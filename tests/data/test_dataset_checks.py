"""Broken and awkward dataset files: one clear message each, counted problems, no traceback."""

import json

import pytest

from captioner.cli import main
from captioner.data.dataset import check_image_files, count_long_captions
from captioner.data.karpathy import load_karpathy
from captioner.errors import DatasetError
from tests.helpers import write_karpathy


def _entry(name, split="train", captions=("a red circle",), **extra):
    return {
        "filename": name,
        "split": split,
        "sentences": [{"raw": c} for c in captions],
        **extra,
    }


def _write(path, images):
    path.write_text(json.dumps({"dataset": "test", "images": images}), encoding="utf-8")
    return path


FATAL = {
    "syntax error": (
        lambda p: p.write_text('{"images": [\n  {"filename": "a.png",\n   "split" "train"}]}'),
        "invalid JSON at line 3 column 12",
    ),
    "latin-1 text": (
        lambda p: p.write_bytes(b'{"images": [\n {"filename": "caf\xe9.png"}]}'),
        "not UTF-8 text (byte 0xe9 at line 2 column 19)",
    ),
    "empty file": (lambda p: p.write_text(""), "empty file"),
    "whitespace file": (lambda p: p.write_text("  \n"), "empty file"),
    "a list": (lambda p: p.write_text("[]"), "not a Karpathy split file (no 'images' list)"),
    "COCO instances file": (
        lambda p: p.write_text(json.dumps({"images": [{"file_name": "a.jpg", "id": 1}]})),
        "no usable images (1 entries without a valid 'filename' (dropped): #0)",
    ),
    "only unknown splits": (
        lambda p: _write(p, [_entry("a.png", split="dev")]),
        "unknown split 'dev'",
    ),
    "images not objects": (lambda p: p.write_text('{"images": [1, 2]}'), "not JSON objects"),
}


@pytest.mark.parametrize("case", sorted(FATAL))
def test_unusable_dataset_files_give_one_clear_error(tmp_path, case):
    write, phrase = FATAL[case]
    path = tmp_path / "dataset.json"
    write(path)
    with pytest.raises(DatasetError) as error:
        load_karpathy(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert phrase in message


def test_missing_or_directory_dataset_paths(tmp_path):
    with pytest.raises(DatasetError, match="nothing.json: no such file"):
        load_karpathy(tmp_path / "nothing.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(DatasetError, match="folder.json: is a directory"):
        load_karpathy(tmp_path / "folder.json")


def test_problems_are_counted_one_line_per_kind(tmp_path):
    images = [
        _entry("a.png", captions=["a red circle", "", "   ", "a blue square"]),
        _entry("a.png", captions=["a duplicate"]),
        _entry("b.png", split="dev"),
        _entry("c.png", split="holdout"),
        _entry("d.png", captions=[]),
        _entry("e.png", captions=["fine", "bad \ud800 text"]),
        _entry("f.png", sentences_extra=1, imgid="seven"),
        {"filename": "g.png", "split": "val", "sentences": [{"tokens": [" ", "\t"]}, "text"]},
        {"split": "test", "sentences": []},
    ]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": images}), encoding="utf-8")
    lines = []
    records = load_karpathy(path, warn=lines.append)
    assert [r.path.name for r in records] == ["a.png", "d.png", "e.png", "f.png", "g.png"]
    assert records[0].captions == [["a", "red", "circle"], ["a", "blue", "square"]]
    assert records[2].captions == [["fine"]]
    assert records[3].image_id == 6
    expected = [
        "3 empty or whitespace-only captions (dropped): #0 a.png caption 1, #0 a.png caption 2, "
        "#7 g.png caption 0",
        "1 duplicate image entries (the first kept): #1 a.png",
        "1 images with unknown split 'dev' (dropped): #2 b.png",
        "1 images with unknown split 'holdout' (dropped): #3 c.png",
        "2 images without captions (not used for training or scoring): #4 d.png, #7 g.png",
        "1 captions that are not valid Unicode (dropped): #5 e.png caption 1",
        "1 entries with a non-integer id (their position used): #6 f.png",
        "1 malformed captions (dropped): #7 g.png caption 1",
        "1 entries without a valid 'filename' (dropped): #8",
    ]
    assert sorted(lines) == sorted(f"{path}: {line}" for line in expected)


def test_missing_image_files_refused_or_skipped(tmp_path):
    path = write_karpathy(tmp_path)
    records = load_karpathy(path)
    for record in records[1:5]:
        record.path.unlink()
    with pytest.raises(DatasetError) as error:
        check_image_files(records, source=path)
    message = str(error.value)
    assert message.startswith(f"{path}: 4 of 6 image files are missing: ")
    assert str(records[1].path) in message and str(records[4].path) not in message  # first 3
    assert "--skip-missing" in message
    lines = []
    kept = check_image_files(records, source=path, skip_missing=True, warn=lines.append)
    assert kept == [records[0], records[5]]
    assert len(lines) == 1 and "4 of 6 image files are missing" in lines[0]
    with pytest.raises(DatasetError, match="none of the 2 image files exists"):
        check_image_files(records[1:3], source=path, skip_missing=True, warn=lines.append)


def test_long_captions_are_counted(tmp_path):
    records = load_karpathy(write_karpathy(tmp_path))  # captions of 3 words, 2 per image
    assert count_long_captions(records, max_length=2) == (12, 12)
    assert count_long_captions(records, max_length=3) == (0, 12)


def test_train_reports_a_broken_dataset_in_one_line(tmp_path, capsys):
    path = tmp_path / "dataset.json"
    path.write_text('{"images": [}')
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"captioner: error: {path}: invalid JSON at line 1 column 13: Expecting value\n"
    assert not (tmp_path / "run").exists()


def test_train_refuses_missing_images_before_training(tmp_path, capsys):
    path = write_karpathy(tmp_path)
    (tmp_path / "imgs" / "im0.png").unlink()
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "1 of 4 image files are missing" in err and "--skip-missing" in err
    assert err.count("\n") == 1


def test_evaluate_refuses_or_skips_missing_images(untrained_run, tmp_path, capsys):
    path = write_karpathy(tmp_path, size=32)
    (tmp_path / "imgs" / "im5.png").unlink()  # one of the two test images
    argv = ["evaluate", "--model", str(untrained_run), "--data", str(path)]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "1 of 2 image files are missing" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "b"), "--skip-missing"]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 image files are missing" in captured.err and "(skipped)" in captured.err
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["num_images"] == 1
