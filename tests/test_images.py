"""Image folders as people have them: mixed sizes and modes, any extension case, corrupt and stray
files, and the mistakes that must stop with a clear message before anything is trained."""

import numpy as np
import pytest
from PIL import Image

from dlref.data import Source, images
from dlref.errors import DlrefError


def _save(path, mode="RGB", size=(20, 16), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.full((size[1], size[0], channels), value, dtype=np.uint8).squeeze()
    Image.fromarray(pixels, mode).save(path)
    return path


def _messy(root):
    """Two classes in every format the loader takes, plus files it must skip or ignore."""
    for i in range(6):
        _save(root / "cat" / f"c{i}.JPG", "RGB", (40 + i, 30), 200)
        _save(root / "dog" / "nested" / f"d{i}.png", "RGBA", (16, 16), 50)
    _save(root / "dog" / "gray.gif", "L", (12, 12), 90)
    _save(root / "dog" / "old.BMP", "RGB", (16, 16), 60)
    _save(root / "dog" / "saved.webp", "RGB", (16, 16), 70)  # From the web.
    _save(root / "dog" / "scan.TIF", "RGB", (16, 16), 80)
    (root / "cat" / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0")
    (root / "cat" / "Thumbs.db").write_bytes(b"\0\0")  # Windows' thumbnails: not worth a note.
    return root


def test_a_messy_folder_loads_with_notes_and_a_warning_per_bad_file(tmp_path):
    data = images.load(Source(data=str(_messy(tmp_path / "pets"))), 0, 0.2, 0.2, size=(8, 8))
    assert data.meta["classes"] == ["cat", "dog"]
    assert data.meta["image_shape"] == [8, 8, 3]  # RGBA and grayscale converted to RGB.
    assert sum(len(split[1]) for split in (data.train, data.val, data.test)) == 16
    assert data.train[0].dtype == np.uint8
    warnings = "\n".join(data.warnings)
    assert "broken.jpeg" in warnings and "notes.txt" not in warnings
    assert any("Resized 16 images" in note for note in data.notes)
    (ignored,) = [note for note in data.notes if note.startswith("Ignored")]
    assert "Ignored 1 file in pets whose extension is not an image's (.txt 1)" in ignored
    assert ".webp, .tif" in ignored


def test_grayscale_folders_stay_one_channel_and_transparency_turns_white(tmp_path):
    for name in ("a", "b"):
        for i in range(5):
            _save(tmp_path / "g" / name / f"{i}.png", "L", (8, 8), 10)
    assert images.load(Source(data=str(tmp_path / "g")), 0, 0.25, 0.25).meta[
        "image_shape"] == [64, 64, 1]
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert images._pixels(clear, (4, 4), 3).min() == 255


def test_the_same_images_give_the_same_fingerprint_and_other_images_another(tmp_path):
    root = _messy(tmp_path / "pets")
    first = images.load(Source(data=str(root)), 0, 0.2, 0.2, size=(8, 8)).fingerprint
    assert images.load(Source(data=str(root)), 0, 0.2, 0.2, size=(8, 8)).fingerprint == first
    _save(root / "cat" / "c0.JPG", "RGB", (40, 30), 10)
    assert images.load(Source(data=str(root)), 0, 0.2, 0.2, size=(8, 8)).fingerprint != first


def test_given_validation_and_test_folders_are_used_as_given(tmp_path):
    root = _messy(tmp_path / "pets")
    for split in ("val", "test"):
        for name in ("cat", "dog"):
            _save(tmp_path / split / name / "x.png", "RGB", (9, 9), 1)
    source = Source(data=str(root), val_data=str(tmp_path / "val"),
                    test_data=str(tmp_path / "test"))
    data = images.load(source, 0, 0.2, 0.2, size=(8, 8))
    assert len(data.val[1]) == 2 and len(data.test[1]) == 2 and len(data.train[1]) == 16


@pytest.mark.parametrize("layout, words", [
    ("missing", ["No such file or folder"]),
    ("file", ["is a file", "one sub-folder of images per class"]),
    ("no-images", ["no image files (.png, .jpg", "only other files (.heic 2, .txt 1)",
                   "converted"]),
    ("loose", ["directly in it but no class sub-folders"]),
    ("one-class", ["has one class (cat)", "two or more"]),
    ("empty-class", ["class folder", "with no images: bird (only other files: .heic 1)"]),
    ("all-corrupt", ["No readable image left in dog", "dog/bad.png: "]),
    ("too-few", ["Too few images", "dog (2)", "skipped 1 unreadable image", "dog/3.jpg: "]),
])
def test_folders_that_cannot_train_a_classifier_are_refused(layout, words, tmp_path):
    root = tmp_path / "photos"
    if layout != "missing":
        root.mkdir()
    if layout in ("one-class", "empty-class", "all-corrupt", "too-few"):
        for i in range(12):
            _save(root / "cat" / f"{i}.png")
    if layout == "file":
        root = _save(tmp_path / "one.png")
    elif layout == "no-images":
        (root / "cat").mkdir()
        (root / "cat" / "readme.txt").write_text("hello")
        for name in ("a.HEIC", "b.heic"):  # A phone's photos.
            (root / "cat" / name).write_bytes(b"\0")
    elif layout == "loose":
        _save(root / "a.png")
    elif layout == "empty-class":
        _save(root / "dog" / "d.png")
        (root / "bird").mkdir()
        (root / "bird" / "b.heic").write_bytes(b"\0")
    elif layout == "all-corrupt":
        (root / "dog").mkdir()
        (root / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif layout == "too-few":  # And a third that cannot be read: named, not only counted.
        _save(root / "dog" / "1.png")
        _save(root / "dog" / "2.png")
        (root / "dog" / "3.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DlrefError) as raised:
        images.load(Source(data=str(root)), 0, 0.2, 0.2)
    assert all(word in str(raised.value) for word in words), str(raised.value)


@pytest.mark.parametrize("names, sizes", [
    (("train", "val", "test"), (12, 6, 8)),
    (("training", "testing"), None),  # No validation folder: drawn from the training one.
])
def test_a_folder_of_split_folders_is_used_as_given(names, sizes, tmp_path, capsys):
    root = tmp_path / "chest_xray" / "chest_xray"  # As the zip unpacks, with __MACOSX.
    for split, count in zip(names, (6, 3, 4), strict=False):
        for label, value in (("NORMAL", 30), ("PNEUMONIA", 220)):
            for i in range(count):
                _save(root / split / label / f"{i}.jpeg", "L", (12, 10), value)
    _save(tmp_path / "chest_xray" / "__MACOSX" / "chest_xray" / "train" / "._0.jpeg", "L")
    data = images.load(Source(data=str(tmp_path / "chest_xray")), 0, 0.2, 0.2, size=(8, 8))
    assert data.meta["classes"] == ["NORMAL", "PNEUMONIA"]
    notes = "\n".join(data.notes)
    assert "the only folder in" in notes and "Split folders in" in notes
    if sizes:
        assert tuple(len(part[1]) for part in (data.train, data.val, data.test)) == sizes
        assert "used as given: train, val, test." in notes
        labelled = images.load_labelled(tmp_path / "chest_xray", data.meta)  # evaluate --data
        assert len(labelled.test[1]) == 8 and "Evaluating on" in capsys.readouterr().err
    else:
        assert len(data.test[1]) == 6 and len(data.train[1]) + len(data.val[1]) == 12
        assert "training (train), testing (test); validation items are drawn from" in notes
    assert not data.warnings
    for path in (root / names[-1] / "PNEUMONIA").iterdir():  # A test folder of one class.
        path.unlink()
    (root / names[-1] / "PNEUMONIA").rmdir()
    data = images.load(Source(data=str(tmp_path / "chest_xray")), 0, 0.2, 0.2, size=(8, 8))
    (warning,) = data.warnings
    assert warning.startswith("Warning: class 'PNEUMONIA' of ") and ", 0 test): the test " \
        "metrics cannot measure it. More images of it" in warning


def test_a_generative_recipe_reads_folders_without_classes_as_one_class(tmp_path):
    for split, count in (("train", 12), ("test", 4)):  # Split folders of plain images.
        for i in range(count):
            _save(tmp_path / "faces" / split / f"{i}.png", "RGB", (10, 10), 20 * i)
    data = images.load(Source(data=str(tmp_path / "faces")), 0, 0.2, 0.2, size=(8, 8),
                       one_class=True)
    assert data.meta["classes"] == ["faces"] and len(data.test[1]) == 4
    with pytest.raises(DlrefError, match="directly in it but no class sub-folders"):
        images.load(Source(data=str(tmp_path / "faces")), 0, 0.2, 0.2)  # A classifier: refused.


def test_table_options_are_refused_for_images(tmp_path):
    root = _messy(tmp_path / "pets")
    with pytest.raises(DlrefError, match="--target, --drop go with tables and texts"):
        images.load(Source(data=str(root), target="label", drop=("x",)), 0, 0.2, 0.2)


def test_an_image_folder_without_a_recipe_name_picks_cnn(tmp_path):
    from dlref.data.target import task_of

    assert task_of(Source(data=str(_messy(tmp_path / "pets"))))[0] == "cnn"


def test_new_images_for_predict_skip_unreadable_files(tmp_path, capsys):
    root = _messy(tmp_path / "pets")
    meta = {"image_shape": [8, 8, 3]}
    files, x = images.read_new(root, meta)
    assert len(files) == len(x) == 16 and x.shape[1:] == (8, 8, 3)
    err = capsys.readouterr().err
    assert "broken.jpeg" in err and "Ignored 1 file in pets" in err and "(.txt 1)" in err
    files, x = images.read_new(root / "dog" / "gray.gif", meta)
    assert len(files) == 1 and x.shape == (1, 8, 8, 3)
    phone = tmp_path / "phone"
    phone.mkdir()
    (phone / "IMG_0001.HEIC").write_bytes(b"\0")
    with pytest.raises(DlrefError, match=r"No image files .* \(only other files: .heic 1\)"):
        images.read_new(phone, meta)


def test_builtin_digits_are_5000_real_mnist_images():
    found = images.mnist_5k()
    assert found.x.shape == (5000, 28, 28, 1) and found.x.max() == 255
    assert sorted(set(found.labels)) == [str(d) for d in range(10)]
    assert not found.flip_safe


def test_sixteen_bit_cmyk_and_rotated_photos_read_as_they_look(tmp_path):
    """16-bit grayscale keeps its contrast (Pillow's own conversion clips it to white), CMYK
    JPEGs become RGB, and a phone photo stored sideways is turned upright by its EXIF tag."""
    deep = np.zeros((8, 8), dtype=np.uint16)
    deep[:, 4:] = 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    sideways = Image.new("RGB", (16, 8), "black")
    sideways.paste((255, 255, 255), (0, 0, 8, 8))  # White on the left half, as stored.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view.
    sideways.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    x, kept, _, warnings = images.decode(
        [tmp_path / "deep.png", tmp_path / "cmyk.jpg", tmp_path / "photo.jpg"], (8, 8), 3)
    assert kept == [0, 1, 2] and not warnings
    assert x[0, :, :4].max() == 0 and x[0, :, 4:].min() == 255
    assert x[1, 4, 4, 0] > 200 and x[1, 4, 4, 1] < 60  # Red.
    # Upright, the stored left half is the top half.
    assert x[2, :3].mean() > 200 and x[2, -3:].mean() < 60


def test_large_jpegs_decode_small_and_are_named_by_their_size(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "big" / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "big" / name / f"{i}.jpg")
    data = images.load(Source(data=str(tmp_path / "big")), 0, 0.2, 0.2, size=(32, 32))
    assert data.train[0].shape[1:] == (32, 32, 3)
    assert any("Resized 10 images" in note and "(1600x1200)" in note for note in data.notes)


def test_images_that_would_not_fit_in_memory_are_refused_with_a_size_that_fits(monkeypatch):
    import os

    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 3 * 2**30 // 4096}  # 3 GiB: 1 GiB budget.
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    with pytest.raises(DlrefError, match=r"60,000 images of cifar10 at 224x224 would take 8\.4 "
                                         r"GiB.*--set image_size=77 or less"):
        images.fits_in_memory(60_000, (224, 224), 3, "cifar10")
    images.fits_in_memory(60_000, (32, 32), 3, "cifar10")  # 184 MB: fine.
