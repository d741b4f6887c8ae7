"""The gan recipe: a DCGAN trained by fit, judged by a classifier (or by nearness to the real
images, for a folder of one class), sampled by predict.

Trained on a folder of 16x16 images of two classes (horizontal and vertical bars) with tiny
networks, one epoch: a complete run takes a few seconds.
"""

import numpy as np
import pytest

import helpers
from dlref.resumable import read_history

TINY = ["--set", "image_size=16", "--set", "latent_dim=8", "--set", "generator_filters=8",
        "--set", "discriminator_filters=4", "--set", "batch_size=8", "--set", "judge_epochs=2",
        "--set", "quality_samples=40", "--set", "grid_samples=9"]


def bars_folder(root, per_class=16, seed=0):
    """Two classes of noisy 12x12 images (resized to 16 by the recipe): bars across, bars down."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in ("across", "down"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 60, size=(12, 12))
            lines = slice(index % 3, None, 3)
            pixels[(lines, slice(None)) if label == "across" else (slice(None), lines)] = 255
            Image.fromarray(pixels.astype(np.uint8)).save(root / label / f"{index:02d}.png")
    return root


def _steps(run, batch_size=8):
    return -(-helpers.read_json(run / "run.json")["data"]["rows"]["train"] // batch_size)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """One completed 1-epoch run, shared by the tests that only read it."""
    import keras

    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("gan")
    folder = bars_folder(base / "bars")
    root = base / "runs"
    result = helpers.invoke("train", "gan", "--data", folder, "--epochs", 1, *TINY,
                            "--runs-dir", root, "--name", "tiny")
    helpers.assert_ok(result)
    return {"run": helpers.only_run(root, "gan"), "root": root, "output": result.output,
            "data": folder}


def test_a_run_is_complete(gan_run):
    run = gan_run["run"]
    assert "Test metrics (real = held-out real images" in gan_run["output"]
    history = read_history(run / "history.csv")
    assert len(history) == 1
    for key in ("d_loss", "g_loss", "val_d_loss", "val_g_loss", "quality", "class_spread"):
        assert isinstance(history[0][key], float), (key, history[0])
    metrics = helpers.read_json(run / "metrics.json")["metrics"]
    assert set(metrics) == {"confident_share", "class_spread", "judge_accuracy"}
    assert set(metrics["confident_share"]) == set(metrics["class_spread"]) == {"model", "real"}
    assert 0 <= metrics["judge_accuracy"]["real"] <= 1
    # The test figure comes from the same generator, noise and judge as the epoch's quality.
    assert metrics["confident_share"]["model"] == pytest.approx(history[0]["quality"])
    manifest = helpers.read_json(run / "run.json")
    assert manifest["status"] == "completed" and manifest["best"]["epoch"] == 1
    for name in ("plots/samples/epoch-001.png", "plots/samples.gif", "plots/samples.png",
                 "plots/learning_curves.png", "checkpoints/best.keras",
                 "checkpoints/last.keras", "artifacts/meta.json"):
        assert (run / name).stat().st_size > 0, name
    assert not (run / "checkpoints" / "backup").exists()


def test_epoch_samples_and_quality_reach_tensorboard(gan_run):
    import tensorflow as tf
    from PIL import Image

    run = gan_run["run"]
    images = []
    for path in (run / "logs" / "samples").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            images += [(value.tag, event.step) for value in event.summary.value]
    assert images == [("samples", 0)]
    scalars = helpers.scalar_events(run / "logs" / "train")
    assert {"epoch_d_loss", "epoch_g_loss", "epoch_quality", "epoch_class_spread"} <= set(scalars)
    grid = Image.open(run / "plots" / "samples" / "epoch-001.png")
    assert grid.mode == "L" and grid.width > 3 * 16  # 3x3 images of 16 pixels, scaled up.
    assert Image.open(run / "plots" / "samples.gif").n_frames == 1


def test_checkpoints_round_trip_in_safe_mode(gan_run):
    from dlref import saved
    from dlref.recipes import gan

    run = gan_run["run"]
    best = saved.load_model(run / "checkpoints" / "best.keras")
    assert isinstance(best, gan.DCGAN)
    generator = saved.load_model(run / "model.keras")
    assert generator.name == "generator" and generator.input_shape == (None, 8)
    noise = gan.fixed_noise(1, 5, 8)
    np.testing.assert_allclose(best.generator.predict(noise, verbose=0),
                               generator.predict(noise, verbose=0), atol=1e-6)
    # Both optimizers come back with their state: a step for each batch of 8 images.
    steps = int(best.g_optimizer.iterations.numpy())
    assert steps == int(best.d_optimizer.iterations.numpy()) == _steps(run)
    last = saved.load_model(run / "checkpoints" / "last.keras")
    for ours, theirs in zip(last.d_optimizer.variables, best.d_optimizer.variables,
                            strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_evaluate_from_the_saved_run(gan_run):
    import json

    result = helpers.invoke("evaluate", gan_run["run"], "--json")
    helpers.assert_ok(result)
    found = json.loads(result.output)["metrics"]
    saved_metrics = helpers.read_json(gan_run["run"] / "metrics.json")["metrics"]
    for metric, row in saved_metrics.items():  # The judge is trained again, seeded.
        assert found[metric] == pytest.approx(row), metric
    helpers.assert_user_error(helpers.invoke("evaluate", gan_run["run"], "--data",
                                             gan_run["data"]), "own held-out images")


def test_predict_samples(gan_run, tmp_path):
    from PIL import Image

    run = gan_run["run"]
    result = helpers.invoke("predict", run, "--samples", 5, "--output", tmp_path / "a",
                            "--seed", 7)
    helpers.assert_ok(result)
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert written == ["grid.png"] + [f"sample-000{i}.png" for i in range(1, 6)]
    image = Image.open(tmp_path / "a" / "sample-0001.png")
    assert (image.size, image.mode) == ((16, 16), "L")
    helpers.assert_ok(helpers.invoke("predict", run, "--samples", 2, "--output", tmp_path / "b",
                                     "--seed", 7))
    assert ((tmp_path / "b" / "sample-0002.png").read_bytes()
            == (tmp_path / "a" / "sample-0002.png").read_bytes())  # Same seed, same images.
    helpers.assert_user_error(helpers.invoke("predict", run, "--data", gan_run["data"]),
                              "--samples N")


def test_interrupted_run_resumes_with_both_optimizers(tmp_path, runs_root, monkeypatch):
    """Stopped after epoch 1 of 2 (as Ctrl-C stops it), resumed: epoch 2 starts from the
    backup's weights and both optimizers' state, and the GIF covers both epochs."""
    from PIL import Image

    from dlref import callbacks, saved

    folder = bars_folder(tmp_path / "bars")

    def stop_after_this_epoch(self, epoch, logs=None):
        self.requests.requested = "SIGINT"
        self.model.stop_training = True

    with monkeypatch.context() as patch:
        patch.setattr(callbacks.GracefulInterrupt, "on_epoch_end", stop_after_this_epoch)
        result = helpers.invoke("train", "gan", "--data", folder, "--epochs", 2, *TINY,
                                "--name", "cut")
    assert result.exit_code == 130, result.output
    run = helpers.only_run(runs_root, "gan")
    assert helpers.read_json(run / "run.json")["status"] == "interrupted"
    assert Image.open(run / "plots" / "samples.gif").n_frames == 1

    helpers.assert_ok(helpers.invoke("train", "--resume", run))
    assert helpers.history_epochs(run) == [0, 1]
    # The same losses and quality as a run never stopped: the noise is re-seeded every epoch.
    helpers.assert_ok(helpers.invoke("train", "gan", "--data", folder, "--epochs", 2, *TINY,
                                     "--name", "whole"))
    whole = next(p for p in helpers.run_folders(runs_root, "gan") if p.name.endswith("whole"))
    for ours, theirs in zip(read_history(run / "history.csv"),
                            read_history(whole / "history.csv"), strict=True):
        for key in ("d_loss", "g_loss", "val_d_loss", "quality"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), (key, ours, theirs)
    assert Image.open(run / "plots" / "samples.gif").n_frames == 2
    last = saved.load_model(run / "checkpoints" / "last.keras")
    # Twice an epoch's steps: the resumed fit started from epoch 1's optimizer state.
    assert int(last.g_optimizer.iterations.numpy()) == 2 * _steps(run)
    assert int(last.d_optimizer.iterations.numpy()) == 2 * _steps(run)


def test_a_folder_of_one_class_trains_with_a_judge_of_nearness(tmp_path, runs_root):
    bars = bars_folder(tmp_path / "bars")
    flat = tmp_path / "faces"  # No class folders: every image directly in the folder.
    flat.mkdir()
    for path in (bars / "across").iterdir():
        path.rename(flat / path.name)
    result = helpers.invoke("train", "gan", "--data", flat, "--epochs", 1, *TINY)
    helpers.assert_ok(result)
    assert "No class folders in" in result.output and "1 class (faces)" in result.output
    run = helpers.only_run(runs_root, "gan")
    history = read_history(run / "history.csv")
    assert {"quality", "coverage"} <= set(history[0]) and "class_spread" not in history[0]
    metrics = helpers.read_json(run / "metrics.json")["metrics"]
    assert set(metrics) == {"realistic_share", "coverage"}
    assert metrics["realistic_share"]["model"] == pytest.approx(history[0]["quality"])
    assert (run / "plots" / "samples.png").is_file()


def test_the_judge_of_one_class_tells_real_images_from_noise_and_collapse():
    from dlref.data import Dataset
    from dlref.recipes import judge

    rng = np.random.default_rng(0)
    images = np.zeros((120, 12, 12, 1), dtype=np.uint8)
    for index, image in enumerate(images):  # A bar in one of 12 rows, some noise.
        image[index % 12] = 200
        image += rng.integers(0, 40, size=image.shape, dtype=np.uint8)
    data = Dataset(train=(images[:80], None), val=(images[80:100], None),
                   test=(images[100:], None), meta={"classes": ["bars"]},
                   extra={"gan": {"seed": 0}})
    found = judge.judge_of(data)
    real = found.scores(images[100:])
    # 20 real test images hold a fifth as many points as the 80 training images they cover.
    assert real["realistic_share"] >= 0.9 and real["coverage"] >= 0.3
    noise = rng.integers(0, 256, size=(40, 12, 12, 1), dtype=np.uint8)
    assert found.scores(noise) == {"realistic_share": 0.0, "coverage": 0.0}
    collapsed = found.scores(np.repeat(images[:1], 40, axis=0))  # One image, 40 times.
    assert collapsed["realistic_share"] == 1.0 and collapsed["coverage"] < real["coverage"] / 3
    # Flat or faint samples (a collapsed generator's): scaled to length 1, their traces
    # would be as strong as a real bar; their contrast says otherwise.
    flat = np.full((40, 12, 12, 1), 90, dtype=np.uint8)
    faint = (90 + images[:40] // 25).astype(np.uint8)
    for collapsed in (flat, faint):
        assert found.scores(collapsed) == {"realistic_share": 0.0, "coverage": 0.0}
    titles = found.labels(np.concatenate([images[:1], noise[:1], faint[:1]]))
    assert [passes for _, passes in titles] == [True, False, False]
    assert titles[0][0].startswith("nearest ") and titles[2][0] == "flat"


def test_settings_and_the_spread_of_classes():
    from dlref.callbacks import StopOnNaNLosses
    from dlref.recipes import judge

    helpers.assert_user_error(helpers.invoke("train", "gan", "--set", "image_size=30"),
                              "multiple of 4")
    one_class = np.tile([0.95, 0.05], (10, 1))
    assert judge.judged(one_class, 0.9) == {"confident_share": 1.0, "class_spread": 0.0}
    even = np.array([[0.6, 0.4], [0.3, 0.7]] * 5)
    assert judge.judged(even, 0.9) == {"confident_share": 0.0, "class_spread": 1.0}
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):  # Training says it diverged.
        StopOnNaNLosses().on_epoch_end(0, {"d_loss": float("nan"), "g_loss": 0.7})
