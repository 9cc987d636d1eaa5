"""The command line on bad input: every file named with its reason, no traceback, exit codes."""

import json
import os
import subprocess
import sys

import pytest

from captioner.cli import main
from captioner.errors import RunDirectoryError
from tests.helpers import ROOT
from tests.image_corpus import write_broken_images, write_valid_images


def test_awkward_and_broken_images_in_one_call(untrained_run, tmp_path, capsys):
    valid = write_valid_images(tmp_path / "valid")
    broken = write_broken_images(tmp_path / "broken")
    assert len(valid) + len(broken) >= 25
    inputs = [str(tmp_path / "valid"), str(tmp_path / "broken"), str(tmp_path / "missing.png")]
    code = main(["caption", "--model", str(untrained_run), *inputs, "--format", "json"])
    captured = capsys.readouterr()
    assert code == 1
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(row["image"] for row in rows) == sorted(str(p) for p in valid)
    assert all(isinstance(row["caption"], str) for row in rows)
    errors = captured.err.splitlines()
    assert "Traceback" not in captured.err
    assert len(errors) == len(broken)  # one line per bad file, nothing else
    for path, reason in broken.items():
        if path.name == "missing.png":
            path = tmp_path / "missing.png"
        [line] = [e for e in errors if e.startswith(f"captioner: {path}: ")]
        assert reason in line


def test_pixel_limit_option(untrained_run, tmp_path, capsys):
    valid = write_valid_images(tmp_path)
    image = next(p for p, shape in valid.items() if shape == (30, 40))  # 1,200 pixels
    tiny = next(p for p, shape in valid.items() if shape == (1, 1))
    argv = ["caption", "--model", str(untrained_run), str(image), str(tiny), "--max-pixels", "1199"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert f"{image}: 40x30 image has 1,200 pixels, more than the limit of 1,199" in captured.err
    assert captured.out.startswith(f"{tiny}: ") and captured.out.count("\n") == 1


def test_user_errors_exit_2_with_one_line(untrained_run, tmp_path, capsys):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    image = next(iter(write_valid_images(tmp_path / "images")))
    cases = [
        (["caption", "--model", str(tmp_path / "nowhere"), str(image)], "no such run directory"),
        (
            [
                "caption",
                "--model",
                str(untrained_run),
                str(image),
                "--attention-dir",
                str(not_a_folder),
            ],
            "file.txt",
        ),
        (["evaluate", "--model", str(untrained_run), "--data", str(not_a_folder)], "file.txt"),
    ]
    for argv, phrase in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("captioner: error: "), err
        assert phrase in err


def _run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "captioner.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_tracebacks_only_with_debug(tmp_path):
    # A user error that the real process reports before importing TensorFlow (fast).
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    quiet = _run_cli("synth", "--out", str(blocker / "data"), "--num-train", "1")
    assert quiet.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert quiet.stderr.startswith("captioner: error: ") and str(blocker) in quiet.stderr
    debug = _run_cli("--debug", "synth", "--out", str(blocker / "data"), "--num-train", "1")
    assert debug.returncode == 1  # Python's exit status for an uncaught exception
    assert "Traceback (most recent call last)" in debug.stderr


def test_debug_reraises_user_errors(tmp_path, capsys):
    broken_run = tmp_path / "run"
    broken_run.mkdir()
    for name in ("model.keras", "vocab.json", "config.json"):
        (broken_run / name).write_text("{")
    assert main(["caption", "--model", str(broken_run), "x.png"]) == 2
    assert "config.json: invalid JSON at line 1 column 2" in capsys.readouterr().err
    with pytest.raises(RunDirectoryError, match="config.json: invalid JSON"):
        main(["--debug", "caption", "--model", str(broken_run), "x.png"])


@pytest.mark.parametrize("argv", [["caption"], ["train", "--epochs", "two"], ["nonsense"]])
def test_argument_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_ctrl_c_exits_130_with_one_line(untrained_run, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("captioner.inference.caption_files.caption_files", interrupted)
    assert main(["caption", "--model", str(untrained_run), str(tmp_path / "x.png")]) == 130
    assert capsys.readouterr().err == "captioner: interrupted\n"


@pytest.mark.slow
def test_training_goes_on_past_unreadable_and_missing_images(tmp_path, capsys):
    from tests.helpers import write_karpathy

    path = write_karpathy(tmp_path, size=32)
    (tmp_path / "imgs" / "im0.png").write_bytes(b"<html></html>")  # a training image
    (tmp_path / "imgs" / "im1.png").unlink()
    run_dir = tmp_path / "run"
    argv = ["train", "--data", str(path), "--out", str(run_dir), "--quiet", "--epochs", "2"]
    tiny = [
        "--encoder",
        "small_cnn",
        "--image-size",
        "32",
        "--units",
        "16",
        "--embed-dim",
        "8",
        "--attention-dim",
        "8",
    ]
    assert main([*argv, *tiny]) == 2  # a missing file is refused before training
    assert "1 of 4 image files are missing" in capsys.readouterr().err
    assert main([*argv, *tiny, "--skip-missing"]) == 0
    captured = capsys.readouterr()
    assert f"{tmp_path / 'imgs' / 'im0.png'}: not an image file" in captured.err
    assert (run_dir / "model.keras").is_file()
    assert len(json.loads((run_dir / "history.json").read_text())) == 2
