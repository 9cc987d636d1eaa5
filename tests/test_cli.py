"""The command line end to end on a tiny run: synth -> train -> caption -> evaluate."""

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from captioner.cli import main
from captioner.inference.visualize import load_attention

TINY_MODEL = [
    "--encoder",
    "small_cnn",
    "--image-size",
    "64",
    "--embed-dim",
    "8",
    "--units",
    "16",
    "--attention-dim",
    "8",
    "--max-length",
    "8",
    "--batch-size",
    "8",
    "--epochs",
    "1",
    "--val-images",
    "4",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "synth"
    assert (
        main(
            [
                "synth",
                "--out",
                str(data),
                "--num-train",
                "16",
                "--num-val",
                "4",
                "--num-test",
                "4",
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    run_dir = root / "run"
    code = main(
        [
            "train",
            "--data",
            str(data / "dataset.json"),
            "--out",
            str(run_dir),
            "--quiet",
            *TINY_MODEL,
        ]
    )
    assert code == 0
    return data, run_dir


def test_train_writes_a_complete_run_directory(run):
    _, run_dir = run
    for name in ("config.json", "vocab.json", "model.keras", "history.json"):
        assert (run_dir / name).is_file(), name
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 1
    assert {"loss", "xent", "penalty", "val_bleu4", "val_object_accuracy"} <= set(history[0])


def test_caption_json_lines_and_attention_files(run, tmp_path, capsys):
    data, run_dir = run
    images = sorted((data / "images" / "test").glob("*.png"))[:2]
    attention_dir = tmp_path / "attention"
    code = main(
        [
            "caption",
            "--model",
            str(run_dir),
            *map(str, images),
            "--format",
            "json",
            "--attention-dir",
            str(attention_dir),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in images]
    for row in rows:
        assert isinstance(row["caption"], str) and row["caption"] == " ".join(row["tokens"])
        npz = [p for p in row["attention"] if p.endswith(".npz")][0]
        maps = load_attention(npz)
        assert maps["words"] == row["tokens"]
        assert maps["alphas"].shape == (len(row["tokens"]), 4, 4)  # 64 px / 16
        assert maps["image_size"] == (64, 64)
        np.testing.assert_allclose(maps["alphas"].sum(axis=(1, 2)), 1.0, rtol=1e-4)
        assert any(p.endswith(".png") for p in row["attention"])


def test_caption_html_report_of_a_users_photos(run, tmp_path, capsys):
    data, run_dir = run
    images = sorted((data / "images" / "test").glob("*.png"))[:2]
    page = tmp_path / "mine" / "photos.html"
    missing = tmp_path / "missing.png"
    args = ["caption", "--model", str(run_dir), *map(str, images), str(missing)]
    assert main([*args, "--format", "json", "--html", str(page)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2  # stdout: only the JSON lines
    assert f"report written to {page}" in captured.err
    text = page.read_text(encoding="utf-8")
    assert "3 images captioned by" in text and "missing.png: no such file" in text
    assert '<span class="k">decoding</span>' in text and "<h2>scores</h2>" not in text
    assert sorted(p.name for p in (tmp_path / "mine" / "photos_images").iterdir()) == [
        "00000.jpg",
        "00001.jpg",
    ]


def test_caption_names_bad_files_and_goes_on(run, tmp_path, capsys):
    data, run_dir = run
    good = sorted((data / "images" / "test").glob("*.png"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_text("<html>not an image</html>")
    missing = tmp_path / "missing.png"
    code = main(["caption", "--model", str(run_dir), str(bad), str(good), str(missing)])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ")
    assert "broken.jpg: not an image file" in captured.err
    assert "missing.png: no such file" in captured.err


def test_caption_accepts_directories_and_globs(run, capsys, tmp_path):
    data, run_dir = run
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((50, 90, 3), 200, np.uint8)).save(folder / "wide.jpg")
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(folder / "grey.png")
    pattern = str(data / "images" / "test" / "test_0000[01].png")
    assert main(["caption", "--model", str(run_dir), str(folder), pattern]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4


# Run in a fresh interpreter that imports TensorFlow only: the SavedModel must not need captioner.
SERVE_SCRIPT = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
data = tf.constant([open(path, "rb").read() for path in sys.argv[2:]])
out = model.signatures["serving_default"](images=data)
assert not any(name.split(".")[0] == "captioner" for name in sys.modules)
for b in range(len(sys.argv) - 2):
    n = int(out["length"][b])
    print(json.dumps({
        "caption": out["caption"][b].numpy().decode(),
        "tokens": [w.decode() for w in out["words"][b, :n].numpy()],
        "score": float(out["score"][b]),
        "alphas_shape": list(out["alphas"].shape[2:]),
    }))
"""


def test_exported_saved_model_captions_jpeg_bytes_like_the_cli(run, tmp_path, capsys):
    import os
    import subprocess
    import sys

    data, run_dir = run
    jpegs = []
    for path in sorted((data / "images" / "test").glob("*.png"))[:2]:
        jpegs.append(tmp_path / (path.stem + ".jpg"))
        Image.open(path).save(jpegs[-1], quality=90)
    out = tmp_path / "export"
    assert (
        main(["export", "--model", str(run_dir), "--out", str(out), "--format", "savedmodel"]) == 0
    )
    assert str(out / "saved_model") in capsys.readouterr().out
    assert main(["caption", "--model", str(run_dir), *map(str, jpegs), "--format", "json"]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    served = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, str(out / "saved_model"), *map(str, jpegs)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr[-2000:]
    rows = [json.loads(line) for line in served.stdout.splitlines()]
    assert len(rows) == len(expected) == 2
    for row, cli_row in zip(rows, expected):
        assert row["caption"] == cli_row["caption"] and row["tokens"] == cli_row["tokens"]
        assert abs(row["score"] - cli_row["score"]) < 1e-4
        assert row["alphas_shape"] == [4, 4]


def test_evaluate_writes_metrics_predictions_and_per_image(run, tmp_path, capsys):
    data, run_dir = run
    out = tmp_path / "eval"
    # No Java in the fast suite: CIDEr (pure Python) on our tokens, SPICE reported.
    coco = ["--coco-metrics", "cider,spice", "--coco-tokenizer", "captioner"]
    assert main(["evaluate", "--model", str(run_dir), "--out", str(out), *coco]) == 0
    printed = capsys.readouterr().out
    assert "bleu4" in printed and "pointing_accuracy" in printed
    assert "spice: not computed" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 4
    assert metrics["beam_size"] == 1
    assert metrics["model"] == str(run_dir) and metrics["dataset"].endswith("dataset.json")
    assert metrics["spice"] is None and "offline" in metrics["not_computed"]["spice"]
    if importlib.util.find_spec("pycocoevalcap") is None:
        assert metrics["cider"] is None and "captioner[coco]" in metrics["not_computed"]["cider"]
    else:
        assert metrics["cider"] >= 0.0
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "object_accuracy"):
        assert 0.0 <= metrics[key] <= 100.0, key
    # A one-epoch model may name no shape yet: grounding scores are then None ("-").
    scored = metrics["grounding_scored_words"]
    for key in ("pointing_accuracy", "attention_in_box", "pointing_chance"):
        value = metrics[key]
        assert (value is None) if scored == 0 else (0.0 <= value <= 100.0), key
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 4 and set(predictions[0]) == {"image_id", "caption"}
    rows = [json.loads(x) for x in (out / "per_image.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len(rows[0]["references"]) >= 3
    assert {"bleu4", "objects_correct", "pointing_accuracy"} <= set(rows[0])
    assert f"report: {out / 'report.html'}" in printed
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "training curves" in page and "val_bleu4" in page and "small_cnn" in page
    assert len(list((out / "report_images").glob("*.jpg"))) == 4
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run_dir),
                "--out",
                str(tmp_path / "e2"),
                "--no-report",
                "--coco-metrics",
                "none",
            ]
        )
        == 0
    )
    assert (tmp_path / "e2" / "metrics.json").is_file()
    assert not (tmp_path / "e2" / "report.html").exists()
    no_repeats = tmp_path / "e3"
    args = ["--out", str(no_repeats), "--no-report", "--coco-metrics", "none"]
    assert main(["evaluate", "--model", str(run_dir), "--no-repeat-ngram", "2", *args]) == 0
    assert json.loads((no_repeats / "metrics.json").read_text())["no_repeat_ngram"] == 2
    for prediction in json.loads((no_repeats / "predictions.json").read_text()):
        words = prediction["caption"].split()
        bigrams = list(zip(words, words[1:]))
        assert len(set(bigrams)) == len(bigrams), prediction


def test_evaluate_from_the_feature_cache_gives_the_same_captions(run, tmp_path, capsys):
    _, run_dir = run
    plain = ["evaluate", "--model", str(run_dir), "--no-report", "--coco-metrics", "none"]
    cache = tmp_path / "cache"
    assert main([*plain, "--out", str(tmp_path / "images")]) == 0
    for attempt in ("extracted", "reused"):
        out = tmp_path / attempt
        assert main([*plain, "--out", str(out), "--feature-cache", str(cache)]) == 0
        assert ("reusing" in capsys.readouterr().out) == (attempt == "reused")
        assert (out / "predictions.json").read_text() == (
            tmp_path / "images" / "predictions.json"
        ).read_text()
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_usage_errors_exit_2_without_traceback(run, tmp_path, capsys):
    assert main(["caption", "--model", str(tmp_path), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and "Traceback" not in err
    _, run_dir = run
    assert main(["evaluate", "--model", str(run_dir), "--coco-metrics", "bleurt"]) == 2
    assert "unknown --coco-metrics ['bleurt']" in capsys.readouterr().err
    assert main(["train", "--select-metric", "xent", "--out", str(tmp_path / "r")]) == 2
    assert "unknown selection metric 'xent'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "two"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", "--model", str(tmp_path), "--beam-size", "0", "x.png"])
    assert exit_info.value.code == 2
    assert "--beam-size: must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["caption", "--model", str(tmp_path), "--no-repeat-ngram", "-1", "x.png"])
    assert "--no-repeat-ngram: must be at least 0, got -1" in capsys.readouterr().err


def test_script_wrappers_call_their_subcommand(monkeypatch, capsys):
    import runpy

    for script, command in (("train.py", "train"), ("evaluate.py", "evaluate")):
        monkeypatch.setattr("sys.argv", [script, "--help"])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(script, run_name="__main__")
        assert exit_info.value.code == 0
        assert f"usage: captioner {command}" in capsys.readouterr().out
