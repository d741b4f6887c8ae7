"""The cnn recipe (chapter 7): image folders as users have them (mixed sizes and colour modes,
upper-case extensions, a corrupt file, stray non-images), the book's network and its
augmentation, the plots, predict and evaluate on new images, and the refusals. Tiny generated
images (16x16), small layers, 1 epoch."""

import numpy as np
import pytest

import helpers
from dlref.data import images

SMALL = ["--set", "filters=[4,4]", "--set", "dense_units=[8]", "--set", "image_size=16",
         "--epochs", 1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _picture(colour, rng, size=(16, 16)):
    """A coloured square on a noisy grey background: a class a network learns at a glance."""
    from PIL import Image

    height, width = size
    pixels = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    top, left = rng.integers(0, height // 3), rng.integers(0, width // 3)
    pixels[top:top + height // 2, left:left + width // 2] = COLOURS[colour]
    return Image.fromarray(pixels)


def _folder(root, per_class=12, seed=0, classes=tuple(COLOURS)):
    """One sub-folder per class of 16x16 PNGs."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            _picture(name, rng).save(root / name / f"{index:02d}.png")
    return root


def _messy(root):
    """What a real folder holds too: other sizes, grayscale, RGBA with transparency, GIF / BMP /
    JPEG under upper-case extensions, a corrupt image and files that are not images."""
    rng = np.random.default_rng(1)
    _picture("red", rng, (24, 20)).save(root / "red" / "BIG.JPG")
    _picture("green", rng).convert("L").save(root / "green" / "gray.png")
    rgba = _picture("blue", rng).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(root / "blue" / "alpha.PNG")
    _picture("blue", rng, (12, 18)).save(root / "blue" / "small.Bmp")
    _picture("red", rng).save(root / "red" / "anim.GIF")
    (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "blue" / "Thumbs.db").write_bytes(b"\x00\x01")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run on a messy folder of three classes, shared by the read-only tests."""
    import keras

    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("cnn")
    folder = _messy(_folder(base / "shapes"))
    result = helpers.invoke("train", "cnn", "--data", folder, *SMALL, "--runs-dir",
                            base / "runs")
    helpers.assert_ok(result)
    return {"run": helpers.only_run(base / "runs", "cnn"), "root": base / "runs",
            "folder": folder, "output": result.output, "base": base}


# --- Training on a folder --------------------------------------------------------------------


def test_a_folder_trains_into_a_complete_run(trained):
    run_dir = trained["run"]
    assert helpers.read_json(run_dir / "run.json")["status"] == "completed"
    assert (run_dir / "model.keras").stat().st_size > 0
    meta = helpers.read_json(run_dir / "artifacts" / "meta.json")
    assert meta["classes"] == ["blue", "green", "red"]
    assert meta["image_shape"] == [16, 16, 3]  # RGB, since most of the images are.
    for name in ("learning_curves", "confusion_matrix", "misclassified"):
        assert (run_dir / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert not (run_dir / "plots" / "augmentation.png").exists()  # Augmentation is off.
    metrics = helpers.read_json(run_dir / "metrics.json")["metrics"]
    assert set(metrics) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert {"model", "trivial", "classical"} <= set(metrics["accuracy"])
    assert "logistic regression on the pixels" in trained["output"]


def test_a_corrupt_file_is_named_and_skipped_and_others_ignored(trained):
    output = trained["output"]
    assert "skipped 1 unreadable image" in output and "broken.png" in output
    assert "notes.txt" not in output and "Thumbs.db" not in output
    # 36 squares + 5 odd ones (the corrupt file and the non-images are not among them).
    rows = helpers.read_json(trained["run"] / "run.json")["data"]["rows"]
    assert sum(rows.values()) == 41


def test_other_sizes_are_resized_with_a_note(trained):
    assert "Resized 2 images" in trained["output"] and "to 16x16" in trained["output"]


def test_the_saved_model_cuts_at_features_for_transfer(trained):
    import keras

    model = keras.saving.load_model(trained["run"] / "model.keras")
    base = keras.Model(model.input, model.get_layer("features").output)
    pixels = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    assert base.predict(pixels, verbose=0).shape == (2, 2 * 2 * 4)  # 16 -> 14 -> 7 -> 5 -> 2.
    assert model.get_layer("probabilities").units == 3


def test_misclassified_grid_titles_true_then_predicted_in_red():
    from dlref.recipes import cnn

    x = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    classes = ["cat", "dog", "golden_retriever", "labrador_retriever"]
    figure = cnn._misclassified(x, np.array([0, 1, 2, 3]), np.array([0, 0, 3, 2]), classes)
    titles = [axis.title for axis in figure.axes if axis.get_title()]
    assert [t.get_text() for t in titles] == ["dog / cat", "golden_retr\u2026 /\nlabrador_re\u2026",
                                             "labrador_re\u2026 /\ngolden_retr\u2026"]
    assert {t.get_color() for t in titles} == {"red"}
    assert "(3 of 3 shown)" in figure.get_suptitle()


# --- Predict and evaluate on new images ------------------------------------------------------


def test_predict_on_a_folder_and_on_one_image(trained, tmp_path):
    import pandas as pd

    new = _folder(tmp_path / "new", per_class=2, seed=5)
    output = tmp_path / "out.csv"
    helpers.assert_ok(helpers.invoke("predict", trained["run"], "--data", new, "--output",
                                     output))
    frame = pd.read_csv(output)
    assert list(frame.columns) == ["file", "predicted_class", "probability_blue",
                                   "probability_green", "probability_red"]
    assert len(frame) == 6 and "red/00.png" in set(frame["file"])
    assert set(frame["predicted_class"]) <= {"blue", "green", "red"}
    assert np.allclose(frame.filter(like="probability_").sum(axis=1), 1, atol=1e-4)

    one = new / "red" / "01.png"
    helpers.assert_ok(helpers.invoke("predict", trained["run"], "--data", one))
    single = pd.read_csv(one.with_suffix(".predictions.csv"))
    assert len(single) == 1 and single["file"][0] == str(one)


def test_evaluate_on_a_labelled_folder(trained, tmp_path):
    labelled = _folder(tmp_path / "labelled", per_class=3, seed=7)
    result = helpers.invoke("evaluate", trained["run"], "--data", labelled)
    helpers.assert_ok(result)
    assert "accuracy" in result.output and "trivial" in result.output


@pytest.mark.parametrize("make, words", [
    (lambda path: path, ["No such file or folder"]),
    (lambda path: path.mkdir() or path, ["No image files (.png, .jpg"]),
])
def test_predict_refuses_a_missing_path_or_no_images(make, words, trained, tmp_path):
    result = helpers.invoke("predict", trained["run"], "--data", make(tmp_path / "nothing"))
    helpers.assert_user_error(result, *words)


# --- Refusals before training ----------------------------------------------------------------


def _no_images(root):
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "readme.txt").write_text("no pictures yet")
    return root


def _one_class(root):
    return _folder(root, classes=("red",))


def _empty_class(root):
    _folder(root, classes=("red", "green"))
    (root / "blue").mkdir()
    return root


@pytest.mark.parametrize("make, words", [
    (_no_images, ["no image files (.png, .jpg", "only other files (.txt 1)"]),
    (_one_class, ["one class (red)", "two or more"]),
    (_empty_class, ["class folder", "with no images: blue"]),
    (lambda root: root / "missing", ["No such file or folder", "missing"]),
])
def test_bad_folders_are_refused_before_a_run_exists(make, words, tmp_path, runs_root):
    result = helpers.invoke("train", "cnn", "--data", make(tmp_path / "photos"), *SMALL)
    helpers.assert_user_error(result, *words)
    assert helpers.run_folders(runs_root) == []


def test_images_too_small_for_the_network_are_refused(tmp_path, runs_root):
    result = helpers.invoke("train", "cnn", "--data", _folder(tmp_path / "photos"),
                            "--set", "image_size=8", "--epochs", 1)
    helpers.assert_user_error(result, "image_size 8 is too small", "at least 10 pixels")
    assert helpers.run_folders(runs_root) == []


# --- Augmentation ----------------------------------------------------------------------------


def test_the_augmented_preset_draws_augmentation_and_never_flips_digits(
        tmp_path, runs_root, monkeypatch):
    """The preset on "digits" (small generated stand-ins, flip_safe False like the real ones)."""
    import keras

    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, (60, 16, 16, 1), dtype=np.uint8)
    labels = np.array([str(i % 3) for i in range(60)], dtype=object)
    monkeypatch.setitem(images.DATASETS, "digits",
                        lambda: images.Images(x, labels, "digits", flip_safe=False))
    result = helpers.invoke("train", "cnn-augmented", *SMALL)
    helpers.assert_ok(result)
    assert "no horizontal flip on digits" in result.output
    run_dir = helpers.only_run(runs_root, "cnn")
    assert (run_dir / "plots" / "augmentation.png").read_bytes()[:4] == b"\x89PNG"
    block = keras.saving.load_model(run_dir / "model.keras").get_layer("augmentation")
    kinds = [type(layer).__name__ for layer in block.layers]
    assert kinds == ["RandomRotation", "RandomTranslation"]


def test_augmentation_flips_images_that_may_be_mirrored_and_only_in_training():
    from dlref.data import Dataset
    from dlref.recipes import cnn

    meta = {"image_shape": [16, 16, 3], "classes": ["a", "b"], "flip_safe": True}
    config = cnn.Config(augmentation=True, filters=(4, 4), dense_units=(8,))
    model = cnn.build_model(config, Dataset((), (), (), meta))
    block = model.get_layer("augmentation")
    assert [type(layer).__name__ for layer in block.layers][-1] == "RandomFlip"
    pixels = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3)).astype("float32")
    assert np.array_equal(np.asarray(block(pixels, training=False)), pixels)
    assert not np.array_equal(np.asarray(block(pixels, training=True)), pixels)


# --- Search space ----------------------------------------------------------------------------


def test_search_space_defaults_rebuild_the_config_and_cover_augmentation():
    import keras_tuner

    from dlref.recipes import cnn

    small = cnn.Config(filters=(2, 3), dense_units=(5,), dropout_rate=0.3, augmentation=True)
    assert cnn.search_space(keras_tuner.HyperParameters(), small) == small
    hp = keras_tuner.HyperParameters()
    assert cnn.search_space(hp, cnn.Config()) == cnn.Config()
    assert {"filters_scale", "dense_scale", "dropout_rate", "learning_rate",
            "augmentation"} <= set(hp.values)
    hp.values.update(filters_scale=0.5, dense_scale=0.25, augmentation=True)
    drawn = cnn.search_space(hp, cnn.Config())
    assert drawn.filters == (32, 16) and drawn.dense_units == (128, 64) and drawn.augmentation
