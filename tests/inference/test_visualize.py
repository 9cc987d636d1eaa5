"""Tests for captioner.inference.visualize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captioner.inference.visualize import load_attention, save_attention, upsample_map

IMG_H, IMG_W = 90, 130
GH, GW = 3, 5


def _image(h: int = IMG_H, w: int = IMG_W) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _alphas(t: int, gh: int = GH, gw: int = GW) -> np.ndarray:
    rng = np.random.default_rng(1)
    a = rng.random((t, gh, gw)).astype(np.float64)
    return a / a.sum(axis=(1, 2), keepdims=True)


def test_npz_round_trip(tmp_path):
    words = ["a", "dog", "on", "the", "$grass"]
    alphas = _alphas(len(words))
    betas = np.linspace(0.1, 0.9, len(words))
    paths = save_attention(
        tmp_path / "sub" / "ex", _image(), words, alphas, betas=betas, formats=("npz",)
    )
    assert paths == [tmp_path / "sub" / "ex.npz"]

    raw = np.load(paths[0])
    assert raw["alphas"].shape == (5, GH, GW) and raw["alphas"].dtype == np.float32
    assert raw["words"].dtype.kind == "U"
    assert raw["image_size"].dtype.kind == "i"
    assert raw["image_size"].tolist() == [IMG_H, IMG_W]
    assert raw["grid_size"].tolist() == [GH, GW]
    assert raw["betas"].dtype == np.float32

    data = load_attention(paths[0])
    assert data["words"] == words
    np.testing.assert_allclose(data["alphas"], alphas, rtol=1e-6)
    np.testing.assert_allclose(data["betas"], betas, rtol=1e-6)
    assert tuple(data["image_size"]) == (IMG_H, IMG_W)
    assert tuple(data["grid_size"]) == (GH, GW)


def test_npz_without_betas_and_empty(tmp_path):
    (path,) = save_attention(tmp_path / "e", _image(), [], np.zeros((0, GH, GW)), formats=["npz"])
    data = load_attention(path)
    assert data["words"] == []
    assert data["alphas"].shape == (0, GH, GW)
    assert data["betas"] is None
    assert tuple(data["grid_size"]) == (GH, GW)


def test_png_written_and_grows_with_words(tmp_path):
    sizes = {}
    for t in (0, 3, 12):
        words = [f"w{i}" for i in range(t)]
        paths = save_attention(tmp_path / f"t{t}", _image(), words, _alphas(t))
        assert [p.suffix for p in paths] == [".png", ".npz"]
        assert all(p.exists() for p in paths)
        with Image.open(paths[0]) as im:
            im.load()
            assert im.format == "PNG"
            sizes[t] = im.size  # (width, height)
    # 12 words -> 13 panels -> 3 rows of 5; 3 words -> 1 row of 4; 0 words -> 1 panel.
    assert sizes[12][1] > sizes[3][1]
    assert sizes[3][0] > sizes[0][0]
    assert sizes[12][0] >= sizes[3][0]


def test_png_with_betas_and_large_image(tmp_path):
    img = _image(480, 640)
    (path,) = save_attention(
        tmp_path / "b", img, ["x"] * 7, _alphas(7, 8, 8), betas=np.full(7, 0.5), formats="png"
    )
    with Image.open(path) as im:
        assert im.size[0] > 0 and im.size[1] > 0


@pytest.mark.parametrize("cell", [(0, 0), (GH - 1, GW - 1), (1, 2), (1, 3)])
def test_upsample_argmax_in_cell(cell):
    grid = np.zeros((GH, GW), dtype=np.float32)
    grid[cell] = 1.0
    up = upsample_map(grid, (IMG_H, IMG_W))
    assert up.shape == (IMG_H, IMG_W)
    assert up.dtype == np.float32
    assert up.min() >= 0.0
    y, x = np.unravel_index(int(np.argmax(up)), up.shape)
    cell_h, cell_w = IMG_H / GH, IMG_W / GW
    assert cell[0] * cell_h <= y < (cell[0] + 1) * cell_h
    assert cell[1] * cell_w <= x < (cell[1] + 1) * cell_w


def test_upsample_preserves_ordering():
    grid = np.array([[0.1, 0.6], [0.0, 0.3]], dtype=np.float32)
    up = upsample_map(grid, (40, 40))
    corners = [up[0, 0], up[0, -1], up[-1, 0], up[-1, -1]]
    assert np.argsort(corners).tolist() == np.argsort(grid.ravel()).tolist()


def test_mismatched_words_raises(tmp_path):
    with pytest.raises(ValueError):
        save_attention(tmp_path / "x", _image(), ["a", "b"], _alphas(3))
    assert not list(tmp_path.iterdir())


def test_bad_alphas_and_formats_raise(tmp_path):
    with pytest.raises(ValueError):
        save_attention(tmp_path / "x", _image(), ["a"], np.zeros((GH, GW)))
    with pytest.raises(ValueError):
        save_attention(tmp_path / "x", _image(), ["a"], _alphas(1), formats=("png", "gif"))
    with pytest.raises(ValueError):
        save_attention(tmp_path / "x", _image(), ["a"], _alphas(1), betas=np.ones(2))
    with pytest.raises(ValueError):
        upsample_map(np.zeros((2, 2, 2)), (4, 4))
