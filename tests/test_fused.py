"""Fused training steps (dlref.fused): on JAX, K batches per compiled call train exactly as K
single steps would. `make test-jax` runs these on JAX; on TensorFlow fusing does nothing."""

import keras
import numpy as np
import pytest

from dlref import backend, training
from dlref import fused
from dlref.fused import (MAX_BATCH_BYTES, MAX_STEPS, DeviceRows, fused_steps, group_size, plan,
                         stacked_parts)

on_jax = pytest.mark.skipif(backend.current() != "jax",
                            reason="fused steps are JAX-only (make test-jax runs these)")


def _data(rows=250, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")
    return x, y


def _model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.3),  # Its seeds must travel in the scan.
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return model


def _fit(model, train, val, epochs, steps, batch_size=16, first=0, device=False):
    """dlref's way of fitting (batches running on across epochs), with `steps` per call, and
    with `device`, the rows gathered on the device."""
    rows = DeviceRows(train) if device else None
    batches, per_epoch = training.epoch_batches(train, batch_size, 7, first, epochs, group=steps,
                                                rows=rows)
    with fused_steps(model, steps, per_epoch, rows):
        history = model.fit(batches, steps_per_epoch=per_epoch, initial_epoch=first,
                            epochs=epochs, validation_data=val, shuffle=False, verbose=0)
    return history.history


@on_jax
@pytest.mark.parametrize("device", [False, True], ids=["host", "device"])
@pytest.mark.parametrize("steps", [3, 16])
def test_fused_steps_train_as_single_steps_do(steps, device):
    # 250 rows at batch 16: 16 batches an epoch, the last of 10 rows. With 3 per call the
    # epoch's last group is short (16 = 5 x 3 + 1); with 16 an epoch is one call but its last
    # batch has another shape.
    train, val = _data(), _data(80, seed=1)
    single, fused = _model(), _model()
    expected = _fit(single, train, val, epochs=3, steps=1)
    found = _fit(fused, train, val, epochs=3, steps=steps, device=device)
    for key in expected:
        np.testing.assert_allclose(found[key], expected[key], rtol=1e-5, err_msg=key)
    for mine, theirs in zip(fused.get_weights(), single.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


@on_jax
def test_validation_evaluate_and_predict_read_every_row_around_fused_training():
    train, val = _data(), _data(80, seed=1)
    model = _model()
    # Keras keeps the evaluation function it made here (one batch per call); reused under 4
    # steps per call it would validate on 1 batch in 4.
    model.evaluate(*val, batch_size=8, verbose=0)
    history = _fit(model, train, val, epochs=1, steps=4)
    assert model.steps_per_execution == 1
    predicted = np.asarray(model.predict(val[0], batch_size=8, verbose=0))
    assert predicted.shape == (80, 1)
    manual = float(np.mean(keras.losses.binary_crossentropy(val[1].reshape(-1, 1), predicted)))
    np.testing.assert_allclose(history["val_loss"][-1], manual, rtol=1e-4)
    loss = model.evaluate(*val, batch_size=8, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, manual, rtol=1e-4)


@on_jax
@pytest.mark.parametrize("device", [False, True], ids=["host", "device"])
def test_a_resumed_fit_groups_its_epochs_as_an_uninterrupted_one(device):
    train, val = _data(), _data(80, seed=1)
    whole, parts = _model(), _model()
    _fit(whole, train, val, epochs=2, steps=5, device=device)
    _fit(parts, train, val, epochs=1, steps=5, device=device)
    _fit(parts, train, val, epochs=2, steps=5, first=1, device=device)
    for mine, theirs in zip(parts.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_group_size_caps_steps_and_fuses_small_batches_only():
    rows = np.zeros((1000, 784), "float32"), np.zeros(1000, "int64")
    assert group_size(rows, 32, steps_per_epoch=1000) == MAX_STEPS
    assert group_size(rows, 32, steps_per_epoch=5) == 5
    per_row = 784 * 4 + 8
    assert group_size(rows, MAX_BATCH_BYTES // per_row, steps_per_epoch=1000) == MAX_STEPS
    assert group_size(rows, MAX_BATCH_BYTES // per_row + 1, steps_per_epoch=1000) == 1
    assert group_size(rows, 1024, steps_per_epoch=1000) == 1  # 3.2 MB batches: step by step.
    images = np.zeros((10, 224, 224, 3), "float32"), np.zeros(10)
    assert group_size(images, 2, steps_per_epoch=100) == 1  # Not fused: too large.


@on_jax
def test_plan_gathers_large_batches_of_a_small_table_on_the_device(monkeypatch):
    model = _model()
    table = np.zeros((2000, 784), "float32"), np.zeros(2000, "int64")  # 6.3 MB
    group, rows = plan(model, table, 1024, steps_per_epoch=2)
    assert group == 2 and isinstance(rows, DeviceRows)
    assert [tuple(leaf.shape) for leaf in rows.first] == [(1, 784), (1,)]
    # Batch 32 (100 KB): on the host, 32 a call.
    assert plan(model, table, 32, steps_per_epoch=63) == (MAX_STEPS, None)
    monkeypatch.setattr(fused, "MAX_DEVICE_BYTES", 2**20)  # A table too large for the device:
    assert plan(model, table, 1024, steps_per_epoch=2) == (1, None)  # 3.2 MB host batches.
    monkeypatch.setattr(fused, "MAX_DEVICE_BYTES", 2**30)
    words = np.array(["a"] * 2000).reshape(-1, 1), table[1]  # Not numbers: on the host.
    assert plan(model, words, 1024, steps_per_epoch=2)[1] is None
    assert plan(model, table, 2000, steps_per_epoch=1) == (1, None)  # One step: no fusing.
    monkeypatch.setattr(backend, "current", lambda: "tensorflow")
    assert plan(model, table, 1024, steps_per_epoch=2)[1] is None


@on_jax
def test_device_rows_are_the_batches_of_the_host_in_the_same_order():
    train = _data(50)
    rows = DeviceRows(train)
    host, _ = training.epoch_batches(train, 8, 7, 1, 3)
    numbers, _ = training.epoch_batches(train, 8, 7, 1, 3, rows=rows)
    host, numbers = list(host), list(numbers)
    assert len(numbers) == len(host) == 2 * 7
    for batch, (indices,) in zip(host, numbers, strict=True):
        assert indices.dtype == np.int32
        for part, expected in zip(fused._gather(rows.arrays, indices), batch, strict=True):
            np.testing.assert_array_equal(np.asarray(part), expected)


def test_batches_gathered_by_group_are_the_same_batches(monkeypatch):
    monkeypatch.setattr(backend, "current", lambda: "jax")  # The NumPy batches.
    train = _data(50)
    single, _ = training.epoch_batches(train, 8, 7, 1, 3)
    grouped, _ = training.epoch_batches(train, 8, 7, 1, 3, group=3)
    single, grouped = list(single), list(grouped)
    assert len(grouped) == len(single) == 2 * 7  # 50 rows at 8: 7 batches an epoch.
    for mine, theirs in zip(grouped, single, strict=True):
        for part, expected in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(part, expected)
    # The first three batches of each epoch are consecutive parts of one array.
    assert np.shares_memory(stacked_parts([b[0] for b in grouped[:3]]), grouped[0][0])
    assert np.shares_memory(stacked_parts([b[1] for b in grouped[7:10]]), grouped[7][1])


def test_stacked_parts_copies_only_what_is_not_one_array_in_order():
    whole = np.arange(24, dtype="float32").reshape(6, 4)
    parts = [whole[0:2], whole[2:4], whole[4:6]]
    stacked = stacked_parts(parts)
    np.testing.assert_array_equal(stacked, np.stack(parts))
    assert np.shares_memory(stacked, whole)
    assert np.shares_memory(stacked_parts(parts[1:]), whole)  # A run of them too.
    np.testing.assert_array_equal(stacked_parts(parts[1:]), np.stack(parts[1:]))
    for others in ([parts[1], parts[0], parts[2]],  # Out of order.
                   [parts[0], parts[0]],  # One part twice.
                   [whole[0:2], whole[2:4].copy(), whole[4:6]],  # Another array.
                   [whole[0:3, :2], whole[3:6, :2]]):  # Columns of it: not contiguous.
        stacked = stacked_parts(others)
        np.testing.assert_array_equal(stacked, np.stack(others))
        assert not np.shares_memory(stacked, whole)


def test_fusing_does_nothing_on_tensorflow_or_for_one_step(monkeypatch):
    model = _model()
    monkeypatch.setattr(backend, "current", lambda: "tensorflow")
    with fused_steps(model, 8, 100):
        assert model.steps_per_execution == 1 and model.train_function is None
    monkeypatch.setattr(backend, "current", lambda: "jax")
    with fused_steps(model, 1, 100):
        assert model.steps_per_execution == 1 and model.train_function is None


def test_only_the_dense_recipes_declare_fused_steps():
    import importlib.util
    from pathlib import Path

    from dlref import registry

    fusing = [name for name, module in registry.RECIPES.items()
              if "\nFUSED_STEPS = True\n" in Path(importlib.util.find_spec(module).origin)
              .read_text(encoding="utf-8")]
    assert fusing == ["regression", "binary", "multiclass"]  # cnn ran 2.6x slower fused.


@on_jax
@pytest.mark.parametrize("device", [False, True], ids=["host", "device"])
def test_a_dense_recipe_trains_fused_through_the_cli(tmp_path, monkeypatch, device):
    import helpers

    done, gathered = [], set()  # Batches of the epoch done after each call; where.
    call = fused._FusedTrainFunction.__call__

    def counted(self, state, iterator):
        found = call(self, state, iterator)
        done.append(self.done)
        gathered.add(self.arrays is not None)
        return found

    monkeypatch.setattr(fused._FusedTrainFunction, "__call__", counted)
    if device:  # Batches of 8 rows, gathered on the device.
        monkeypatch.setattr(fused, "MIN_DEVICE_BATCH_BYTES", 1)
    data = helpers.regression_csv(tmp_path / "houses.csv", rows=400)
    result = helpers.invoke("train", "regression", "--data", data, "--target", "y",
                            "--epochs", 2, "--set", "batch_size=8")
    helpers.assert_ok(result)
    rows = helpers.read_json(helpers.only_run(tmp_path / "runs") / "run.json")["data"]["rows"]
    batches = -(-rows["train"] // 8)
    assert batches > 32  # ~280 rows: a group of 32 batches, then the epoch's last few.
    epoch = [*range(32, batches, 32), 0]
    assert done == epoch * 2
    assert gathered == {device}
    output = tmp_path / "predicted.csv"
    helpers.assert_ok(helpers.invoke("predict", helpers.only_run(tmp_path / "runs"), "--data",
                                     data, "--output", output))
    assert len(output.read_text().splitlines()) == 401
