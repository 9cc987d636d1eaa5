"""ImageNet class names and `captioner classify`: the check that offline weights work."""

import json

import numpy as np

from captioner.cli import main
from captioner.inference.classification import center_square
from captioner.models.imagenet_classes import imagenet_classes
from tests.helpers import FIXTURES

REFERENCE = FIXTURES / "imagenet_reference"


def test_the_1000_class_names_ship_with_the_package():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert [c.index for c in classes] == list(range(1000))
    assert len({c.synset for c in classes}) == 1000
    assert classes[0].synset == "n01440764" and classes[0].name == "tench"
    assert classes[285].names == "Egyptian cat"
    assert classes[281].name == "tabby" and classes[967].name == "espresso"


def test_center_square_crops_the_middle_then_resizes():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 255  # the middle square is white, the sides black
    square = center_square(image, 16)
    assert square.shape == (16, 16, 3)
    assert square.min() == 255


def test_classify_names_a_cat_and_reports_bad_files(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    photo = REFERENCE / "chelsea_224.png"
    code = main(["classify", str(photo), str(bad), "--encoder", "mobilenet_v2_tv", "--top-k", "5"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "broken.jpg: not an image file" in err
    lines = out.splitlines()
    assert lines[0] == f"{photo}:"
    assert len(lines) == 6  # the header and five classes
    probabilities = [float(line.split()[0]) for line in lines[1:]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0
    assert any("cat" in line for line in lines[1:3]), out


def test_classify_json_and_usage_errors(tmp_path, capsys):
    photo = REFERENCE / "coffee_224.png"
    code = main(
        ["classify", str(photo), "--encoder", "mobilenet_v2_tv", "--format", "json", "--top-k", "2"]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    row = json.loads(out)
    assert row["image"] == str(photo)
    assert [c["names"] for c in row["top"]][0] == "espresso"
    assert len(row["top"]) == 2
    assert main(["classify", str(photo), "--encoder", "resnet50"]) == 2
    assert "choose from efficientnet_lite0" in capsys.readouterr().err
    missing = tmp_path / "nothing.pth"
    assert (
        main(["classify", str(photo), "--encoder", "mobilenet_v2_tv", "--weights", str(missing)])
        == 2
    )
    assert "nothing.pth: no such file" in capsys.readouterr().err
