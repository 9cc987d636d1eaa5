"""The image loader: awkward files load as RGB, broken ones raise ImageLoadError naming them."""

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from captioner.data.images import ImageLoadError, expand_inputs, load_image
from tests.image_corpus import png_claiming_size, write_broken_images, write_valid_images


def test_awkward_images_load_as_rgb_with_their_displayed_size(tmp_path):
    expected = write_valid_images(tmp_path)
    assert len(expected) >= 20
    for path, shape in expected.items():
        image = load_image(path)
        assert image.shape == (*shape, 3), path.name
        assert image.dtype == np.uint8


def test_broken_files_are_refused_by_name_with_their_reason(tmp_path):
    expected = write_broken_images(tmp_path)
    for path, reason in expected.items():
        with pytest.raises(ImageLoadError) as error:
            load_image(path)
        message = str(error.value)
        assert message.startswith(f"{path}: "), message
        assert reason in message, message
        assert "\n" not in message


def test_devices_and_pipes_are_refused_without_reading_them(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ImageLoadError, match="not a regular file"):
            load_image(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(path)
    assert load_image(path, max_pixels=12_000).shape == (100, 120, 3)
    with pytest.raises(ImageLoadError, match="12,000 pixels, more than the limit of 11,999"):
        load_image(path, max_pixels=11_999)
    header_only = tmp_path / "claims.png"
    header_only.write_bytes(png_claiming_size(10_000, 10_000))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(header_only)


def test_transparent_pixels_are_laid_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque; the others fully transparent black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image[0, 0].tolist() == [10, 20, 30]
    assert image[1, 1].tolist() == [255, 255, 255]


def test_16_bit_images_use_their_full_range(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 200]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    np.testing.assert_array_equal(image[:, :, 0], [[0, 100], [255, 200]])
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 2])


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # stored: white left half
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: white top half
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "r.jpg").astype(int)
    assert loaded.shape == (40, 20, 3)
    assert loaded[:15].mean() > 240 and loaded[25:].mean() < 15


def test_animations_give_their_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (40, 200, 90)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    assert np.all(load_image(tmp_path / "a.png") == 40)


def test_broken_exif_does_not_refuse_a_good_image(tmp_path, monkeypatch):
    def broken(image):
        raise SyntaxError("bad EXIF")

    Image.fromarray(np.full((4, 5, 3), 7, np.uint8)).save(tmp_path / "x.png")
    monkeypatch.setattr("captioner.data.images.ImageOps.exif_transpose", broken)
    assert load_image(tmp_path / "x.png").shape == (4, 5, 3)


def _valid_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _valid_gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buffer, "GIF")
    return buffer.getvalue()


def _mangled(data: bytes) -> st.SearchStrategy[bytes]:
    """A real image file cut short, with bytes flipped, or with junk appended."""
    cut = st.integers(0, len(data)).map(lambda n: data[:n])
    flips = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=8)

    def flip(changes):
        out = bytearray(data)
        for index, value in changes:
            out[index] = value
        return bytes(out)

    return st.one_of(cut, flips.map(flip), st.binary(max_size=64).map(lambda b: data + b))


image_bytes = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=256).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=256).map(lambda b: b"\xff\xd8\xff\xe0" + b),
    st.binary(max_size=256).map(lambda b: b"GIF89a" + b),
    st.binary(max_size=256).map(lambda b: b"II*\x00" + b),
    st.binary(max_size=256).map(lambda b: b"BM" + b),
    _mangled(_valid_png()),
    _mangled(_valid_gif()),
)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=image_bytes)
def test_any_bytes_give_an_rgb_array_or_an_image_load_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.jpg"
        path.write_bytes(data)
        try:
            image = load_image(path, max_pixels=1_000_000)
        except ImageLoadError as error:
            assert str(error).startswith(f"{path}: ")
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[0] * image.shape[1] <= 1_000_000


def test_expand_inputs_keeps_missing_paths_and_sorts_folders(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    paths = expand_inputs(
        [
            str(tmp_path),
            str(tmp_path / "*.png"),
            "nothing*.png",
            "gone.jpg",
            str(tmp_path / "empty"),
        ]
    )
    assert paths == [
        tmp_path / "a.JPG",
        tmp_path / "b.png",
        tmp_path / "b.png",
        Path("nothing*.png"),
        Path("gone.jpg"),
        tmp_path / "empty",
    ]
    with pytest.raises(ImageLoadError, match="empty: is a directory, not an image file"):
        load_image(tmp_path / "empty")


def test_folders_include_images_without_an_image_extension(tmp_path):
    image = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    image.save(tmp_path / "photo.jpg.download", format="JPEG")
    image.save(tmp_path / "scan", format="PNG")
    (tmp_path / "README").write_text("holiday photos")
    (tmp_path / "sound.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    paths = expand_inputs([str(tmp_path)])
    assert paths == [tmp_path / "photo.jpg.download", tmp_path / "scan"]
    assert all(load_image(p).shape == (4, 4, 3) for p in paths)
