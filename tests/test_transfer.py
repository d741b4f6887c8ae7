"""The transfer recipe: two stages in one run, its bases and weights, and what it refuses."""

import os
import signal

import numpy as np
import pytest
from PIL import Image

import helpers

# A tiny built-in task: 5 target images per class, a 1-epoch pretrained base, small head.
TINY = ["--set", "pretrain_epochs=1", "--set", "per_class=5", "--set", "dense_units=16",
        "--set", "feature_epochs=1", "--epochs", 2]


def _folder(root, classes=("red", "green", "blue"), count=10, size=16):
    """Class folders of small noisy images, each class a dominant colour."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 90, (size, size, 3))
            pixels[..., index % 3] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_builtin_task_trains_in_two_stages_beside_scratch(runs_root):
    result = helpers.invoke("train", "transfer", *TINY, "--seed", 1)
    helpers.assert_ok(result)
    assert "Stage 1 of 2: feature extraction" in result.output
    assert "Stage 2 of 2: fine-tuning" in result.output
    run_dir = next((runs_root / "transfer").iterdir())
    history = (run_dir / "history.csv").read_text().splitlines()
    stage = history[0].split(",").index("stage")
    assert [float(row.split(",")[stage]) for row in history[1:]] == [1, 2]
    metrics = helpers.read_json(run_dir / "metrics.json")["metrics"]
    assert set(metrics["accuracy"]) == {"model", "trivial", "scratch"}
    assert (run_dir / "plots" / "misclassified.png").is_file()
    assert helpers.read_json(run_dir / "artifacts" / "meta.json")["classes"] == list("56789")


@pytest.mark.parametrize("epoch", [0, 1], ids=["end-of-stage-1", "in-stage-2"])
def test_a_run_interrupted_in_stage_two_resumes_in_stage_two(epoch, runs_root, monkeypatch):
    """Ctrl-C in the last epoch of stage 1, or in stage 2: the resume goes on in stage 2."""
    from dlref.callbacks import StageMark

    original = StageMark.on_epoch_end

    def interrupt_in_stage_two(self, at, logs=None):
        original(self, at, logs)
        if at == epoch:  # Ctrl-C, which stops at the end of this epoch.
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(StageMark, "on_epoch_end", interrupt_in_stage_two)
    args = [a for a in TINY if a != 2 and a != "--epochs"]
    stopped = helpers.invoke("train", "transfer", *args, "--epochs", 3,
                             "--set", "scratch_baseline=false")
    assert stopped.exit_code == 130, stopped.output
    run_dir = next((runs_root / "transfer").iterdir())
    assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"
    monkeypatch.setattr(StageMark, "on_epoch_end", original)
    resumed = helpers.invoke("train", "--resume", run_dir)
    helpers.assert_ok(resumed)
    assert "Stage 2 of 2" in resumed.output and "Stage 1 of 2" not in resumed.output
    assert "Pretraining the base" not in resumed.output  # The backup holds the weights.
    assert "epoch 3/3" in resumed.output and "Skipping variable loading" not in resumed.output
    assert ("Starting from the best epoch so far" in resumed.output) == (epoch == 0)
    rows = (run_dir / "history.csv").read_text().splitlines()[1:]
    assert len(rows) == 3


def test_weights_from_a_cnn_run_transfer_to_another_folder(tmp_path, runs_root):
    source = _folder(tmp_path / "big", ("a", "b", "c"), count=12)
    target = _folder(tmp_path / "small", ("x", "y"), count=8, size=24)
    helpers.assert_ok(helpers.invoke("train", "cnn", "--data", source, "--epochs", 1,
                                     "--set", "filters=[4,4]", "--set", "dense_units=[8,8]",
                                     "--name", "pretrained"))
    cnn_run = helpers.only_run(runs_root, "cnn")
    # --weights names the run: its model.keras is the base.
    result = helpers.invoke("train", "transfer", "--data", target, "--weights", "pretrained",
                            "--epochs", 2, "--set", "feature_epochs=1", "--set", "dense_units=8")
    helpers.assert_ok(result)
    assert "Resized 16 images" in result.output  # 24x24 to the cnn's 64x64 input.
    assert "input size 64x64." in result.output  # RGB: no word of grayscale.
    run_dir = helpers.only_run(runs_root, "transfer")
    config = helpers.read_json(run_dir / "run.json")["config"]
    assert config["weights"] == str(cnn_run / "model.keras")
    predictions = helpers.invoke("predict", run_dir, "--data", target / "x",
                                 "--output", tmp_path / "p.csv")
    helpers.assert_ok(predictions)
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "file,predicted_class,probability_x,probability_y"


def test_random_weights_and_a_small_mobilenet(tmp_path, runs_root):
    folder = _folder(tmp_path / "photos", count=6)
    result = helpers.invoke("train", "transfer", "--data", folder, "--weights", "none",
                            "--set", "image_size=32", "--epochs", 1, "--set", "dense_units=8",
                            "--set", "scratch_baseline=false")
    helpers.assert_ok(result)
    run_dir = next((runs_root / "transfer").iterdir())
    metrics = helpers.read_json(run_dir / "metrics.json")["metrics"]
    assert "scratch" not in metrics["accuracy"]
    evaluated = helpers.invoke("evaluate", run_dir, "--data", folder, "--json")
    helpers.assert_ok(evaluated)


def test_imagenet_weights_offline_name_the_alternatives(tmp_path, runs_root, monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    folder = _folder(tmp_path / "photos", count=4)
    result = helpers.invoke("train", "transfer", "--data", folder)
    helpers.assert_user_error(result, "ImageNet weights of mobilenet_v2", "--weights none",
                              "--weights PATH")
    assert not (runs_root / "transfer").exists()  # Refused before a run folder was made.


@pytest.mark.parametrize("what", ["not-a-model", "tabular-model", "missing"])
def test_weights_that_are_not_an_image_model_are_refused(what, tmp_path, runs_root, trained):
    folder = _folder(tmp_path / "photos", count=4)
    path = {"not-a-model": tmp_path / "notes.keras", "missing": tmp_path / "gone.keras",
            "tabular-model": trained["regression"]["run"] / "model.keras"}[what]
    if what == "not-a-model":
        path.write_text("hello")
    result = helpers.invoke("train", "transfer", "--data", folder, "--weights", path)
    words = {"not-a-model": ["Cannot load", "not a .keras zip"],
             "tabular-model": ["does not take images"],
             "missing": ["No model file"]}[what]
    helpers.assert_user_error(result, *words)


def test_base_and_weights_go_with_transfer_only(runs_root):
    result = helpers.invoke("train", "regression", "--base", "resnet50")
    helpers.assert_user_error(result, "--base goes with the transfer recipe")
    result = helpers.invoke("train", "transfer", "--base", "vgg99")
    helpers.assert_user_error(result, "base must be one of", "mobilenet_v2")
