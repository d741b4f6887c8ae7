"""evaluate and predict on trained runs: metrics, probability columns, refusals."""

import json

import numpy as np
import pandas as pd
import pytest

import helpers


def _new_rows(tmp_path, recipe, rows=12, drop_target=True, delimiter=","):
    header, table = {"regression": lambda: helpers.regression_rows(rows, 9, categorical=True),
                     "binary": lambda: helpers.binary_rows(rows, 9, categorical=True),
                     "multiclass": lambda: helpers.multiclass_rows(rows, 9)}[recipe]()
    if drop_target:
        header, table = header[:-1], [row[:-1] for row in table]
    return helpers.write_csv(tmp_path / f"new-{recipe}.csv", header, table, delimiter=delimiter)


@pytest.mark.parametrize("recipe", ["regression", "binary", "multiclass"])
def test_evaluate_prints_the_metrics(trained, recipe):
    run = trained[recipe]["run"]
    result = helpers.invoke("evaluate", run)
    helpers.assert_ok(result)
    saved = helpers.read_json(run / "metrics.json")["metrics"]
    for name in saved:
        assert name in result.output
    assert "trivial" in result.output and "classical" in result.output
    as_json = json.loads(helpers.invoke("evaluate", run, "--json").output)
    for name, row in saved.items():
        # Same model, same test split: the same figures as at the end of training.
        assert as_json["metrics"][name]["model"] == pytest.approx(row["model"], rel=1e-5,
                                                                  nan_ok=True)


def test_evaluate_by_run_name(trained):
    found = trained["regression"]
    result = helpers.invoke("evaluate", found["run"].name, "--runs-dir", found["root"])
    helpers.assert_ok(result)
    assert "mae" in result.output


@pytest.mark.parametrize("recipe", ["regression", "binary", "multiclass"])
def test_evaluate_on_a_labelled_file(trained, tmp_path, recipe):
    labelled = _new_rows(tmp_path, recipe, rows=20, drop_target=False,
                         delimiter=";" if recipe == "binary" else ",")
    result = helpers.invoke("evaluate", trained[recipe]["run"], "--data", labelled, "--json")
    helpers.assert_ok(result)
    metrics = json.loads(result.output)["metrics"]
    assert set(metrics) == set(helpers.read_json(trained[recipe]["run"] / "metrics.json")
                               ["metrics"])
    assert all("model" in row for row in metrics.values())


def test_evaluate_on_a_file_with_unknown_classes(trained, tmp_path):
    header, table = helpers.multiclass_rows(12, 9, classes=("setosa", "rose", "virginica"))
    path = helpers.write_csv(tmp_path / "odd.csv", header, table)
    result = helpers.invoke("evaluate", trained["multiclass"]["run"], "--data", path)
    helpers.assert_user_error(result, "never saw", "rose")


def test_evaluate_binary_on_a_file_with_an_unknown_label(trained, tmp_path):
    header, table = helpers.binary_rows(12, 9, categorical=True, labels=("no", "maybe"))
    path = helpers.write_csv(tmp_path / "odd.csv", header, table)
    result = helpers.invoke("evaluate", trained["binary"]["run"], "--data", path)
    helpers.assert_user_error(result, "never saw", "maybe")


def test_predict_binary(trained, tmp_path):
    new = _new_rows(tmp_path, "binary", delimiter=";")
    out = tmp_path / "out.csv"
    result = helpers.invoke("predict", trained["binary"]["run"], "--data", new, "--output", out)
    helpers.assert_ok(result)
    assert "Wrote 12 predictions" in result.output
    frame = pd.read_csv(out)
    assert len(frame) == 12
    assert list(frame.columns) == ["x1", "x2", "x3", "plan", "predicted_churned",
                                   "probability_yes"]
    assert frame["probability_yes"].between(0, 1).all()
    threshold = helpers.read_json(trained["binary"]["run"] / "artifacts" / "meta.json")[
        "threshold"]
    expected = np.where(frame["probability_yes"] >= threshold, "yes", "no")
    assert (frame["predicted_churned"] == expected).all()


def test_predict_multiclass_probabilities_sum_to_one(trained, tmp_path):
    new = _new_rows(tmp_path, "multiclass")
    out = tmp_path / "out.csv"
    helpers.assert_ok(helpers.invoke("predict", trained["multiclass"]["run"], "--data", new,
                                     "--output", out))
    frame = pd.read_csv(out)
    classes = ["setosa", "versicolor", "virginica"]
    probabilities = frame[[f"probability_{c}" for c in classes]].to_numpy()
    assert len(frame) == 12
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (frame["predicted_species"] == np.array(classes)[probabilities.argmax(axis=1)]).all()


def test_predict_regression_default_output_path(trained, tmp_path):
    new = _new_rows(tmp_path, "regression", drop_target=False)  # A target column is ignored.
    result = helpers.invoke("predict", trained["regression"]["run"], "--data", new)
    helpers.assert_ok(result)
    out = tmp_path / "new-regression.predictions.csv"
    frame = pd.read_csv(out)
    assert len(frame) == 12 and np.isfinite(frame["predicted_y"]).all()
    assert str(out) in result.output


def test_predict_matches_the_saved_model(trained, tmp_path):
    import keras

    from dlref import io
    from dlref.data import tabular

    run = trained["regression"]["run"]
    new = _new_rows(tmp_path, "regression")
    out = tmp_path / "out.csv"
    helpers.assert_ok(helpers.invoke("predict", run, "--data", new, "--output", out))
    meta = io.read_json(run / "artifacts" / "meta.json")
    model = keras.saving.load_model(run / "model.keras")
    x, _ = tabular.features_for(pd.read_csv(new), meta, str(new))
    np.testing.assert_allclose(pd.read_csv(out)["predicted_y"],
                               model.predict(x, verbose=0)[:, 0], rtol=1e-5)


def test_predict_refuses_to_overwrite(trained, tmp_path):
    new = _new_rows(tmp_path, "binary", delimiter=";")
    out = tmp_path / "out.csv"
    out.write_text("keep me\n")
    result = helpers.invoke("predict", trained["binary"]["run"], "--data", new, "--output", out)
    helpers.assert_user_error(result, "exists", "--overwrite")
    assert out.read_text() == "keep me\n"
    helpers.assert_ok(helpers.invoke("predict", trained["binary"]["run"], "--data", new,
                                     "--output", out, "--overwrite"))
    assert len(pd.read_csv(out)) == 12


def test_predict_on_data_missing_a_feature(trained, tmp_path):
    header, table = helpers.binary_rows(12, 9, categorical=True)
    keep = [i for i, name in enumerate(header) if name not in ("x2", "churned")]
    path = helpers.write_csv(tmp_path / "partial.csv", [header[i] for i in keep],
                             [[row[i] for i in keep] for row in table], delimiter=";")
    out = tmp_path / "out.csv"
    result = helpers.invoke("predict", trained["binary"]["run"], "--data", path, "--output", out)
    helpers.assert_user_error(result, "lacks feature columns", "x2")
    assert not out.exists()


def test_predict_fills_gaps_with_the_training_medians(trained, tmp_path):
    import keras

    from dlref import io

    run = trained["multiclass"]["run"]
    header, table = helpers.multiclass_rows(12, 9)
    table[4][1] = ""
    path = helpers.write_csv(tmp_path / "holes.csv", header[:-1], [r[:-1] for r in table])
    out = tmp_path / "out.csv"
    result = helpers.invoke("predict", run, "--data", path, "--output", out)
    helpers.assert_ok(result)
    assert "1 row with gaps" in result.output and "Wrote 12 predictions" in result.output
    meta = io.read_json(run / "artifacts" / "meta.json")
    x2 = next(c for c in meta["columns"] if c["name"] == "x2")
    filled = [x2["fill"] if v == "" else float(v) for v in table[4][:4]]
    scaled = [(v - c["mean"]) / c["std"] for v, c in zip(filled, meta["columns"], strict=True)]
    x = np.array([scaled])
    model = keras.saving.load_model(run / "model.keras")
    expected = model.predict(x.astype("float32"), verbose=0)[0]
    written = pd.read_csv(out).iloc[4]
    np.testing.assert_allclose([written[f"probability_{c}"] for c in meta["classes"]], expected,
                               rtol=1e-5)


def test_predict_warns_about_text_in_a_numeric_feature(trained, tmp_path):
    header, table = helpers.multiclass_rows(12, 9)
    table[3][0] = "abc"
    table[5][0] = "n.a."  # A way to write "missing": a gap, without a warning.
    path = helpers.write_csv(tmp_path / "text.csv", header[:-1], [r[:-1] for r in table])
    result = helpers.invoke("predict", trained["multiclass"]["run"], "--data", path,
                            "--output", tmp_path / "out.csv")
    helpers.assert_ok(result)
    assert "text where training had numbers (x1: 1 row, e.g. 'abc')" in result.output
    assert "2 rows with gaps" in result.output


def test_predict_needs_data(trained):
    result = helpers.invoke("predict", trained["binary"]["run"])
    assert result.exit_code == 2 and "--data" in result.output


def test_evaluate_an_unknown_run(runs_root):
    helpers.assert_user_error(helpers.invoke("evaluate", "nope"), "No run 'nope'")
