"""Bad input fails before fit: exit code 2, a message saying what was found and how to fix it,
no traceback, and no run folder. Plus the tabular loader's encodings on good input."""

import numpy as np
import pytest

import helpers
from dlref.data import Source, tabular
from dlref.errors import DlrefError


def _regression(path, change=None):
    header, rows = helpers.regression_rows()
    if change:
        change(header, rows)
    return helpers.write_csv(path, header, rows)


def _set(row_numbers, column, value):
    """A change that puts `value` into `column` of the given data rows (0-based)."""

    def change(header, rows):
        for number in row_numbers:
            rows[number][header.index(column)] = value

    return change


def _text_column(header, rows):
    header.insert(0, "comment")
    for i, row in enumerate(rows):
        row.insert(0, f"free text number {i} about this row")


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _empty_column(header, rows):
    header.insert(1, "notes")
    for row in rows:
        row.insert(1, "")


def _integer_target(path):
    """Regression data whose target holds whole numbers (prices in dollars, say)."""
    header, rows = helpers.regression_rows()
    for i, row in enumerate(rows):
        row[-1] = 100 + 7 * i
    return helpers.write_csv(path, header, rows)


# name -> (writes the data file and returns the train arguments, words the message must hold)
CASES = {
    "missing file": (
        lambda d: ["regression", "--data", d / "nowhere.csv", "--target", "y"],
        ["not found", "nowhere.csv"]),
    "empty file": (
        lambda d: ["regression", "--data", _write(d / "empty.csv", ""), "--target", "y"],
        ["empty"]),
    "header only": (
        lambda d: ["regression", "--data", _write(d / "h.csv", "x1,x2,y\n"), "--target", "y"],
        ["header", "no data rows"]),
    "headerless": (
        lambda d: ["regression", "--data", _write(d / "nh.csv", "0.1,0.2,3.5\n1.5,2.5,4.25\n"
                                                  "2.0,1.0,0.5\n"), "--target", "y"],
        ["No target column 'y'", "no header row", "column_1, column_2, column_3"]),
    "missing target": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "yy"],
        ["No target column 'yy'", "Did you mean 'y'", "Columns: x1, x2, x3, y"]),
    "no --target": (
        lambda d: ["regression", "--data", _regression(d / "r.csv")],
        ["--target is required"]),
    "--missing error with gaps": (
        lambda d: ["regression", "--data", _regression(d / "r.csv", _set([3, 7], "x2", "")),
                   "--target", "y", "--missing", "error"],
        ["'x2'", "missing in 2 rows", "lines 5, 9", "--missing impute"]),
    "unknown --missing": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "y",
                   "--missing", "mean"],
        ["--missing", "impute, drop, error", "'mean'"]),
    "inf in a feature": (
        lambda d: ["regression", "--data", _regression(d / "r.csv", _set([0], "x3", "inf")),
                   "--target", "y"],
        ["'x3'", "inf in 1 row ", "--drop"]),
    "target empty in every row": (
        lambda d: ["regression", "--data", _regression(d / "r.csv", _set(range(48), "y", "")),
                   "--target", "y"],
        ["target 'y' is empty in every row"]),
    "inf in the target": (
        lambda d: ["regression", "--data", _regression(d / "r.csv", _set([5], "y", "-inf")),
                   "--target", "y"],
        ["target", "'y'", "inf in 1 row "]),
    "stray text in two numeric features": (
        lambda d: ["regression", "--data", _regression(
            d / "r.csv", lambda h, r: (_set([6], "x1", "abc")(h, r), _set([2], "x3", "1,5")(h, r))),
            "--target", "y"],
        ["'x1'", "'abc'", "1 row ", "'x3'", "'1,5'", "--drop"]),
    "a column asked for that is entirely empty": (
        lambda d: ["regression", "--data", _regression(d / "r.csv", _empty_column),
                   "--target", "y", "--features", "x1,notes"],
        ["'notes' is entirely empty", "cannot be a feature"]),
    "--drop the target": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "y",
                   "--drop", "y"],
        ["--drop names the target 'y'"]),
    "--drop an unknown column": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "y",
                   "--drop", "x_3"],
        ["--drop: no column 'x_3'", "Did you mean 'x3'", "Columns: x1, x2, x3"]),
    "--features an unknown column": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "y",
                   "--features", "x1,xx2"],
        ["--features: no column 'xx2'", "Did you mean 'x2'"]),
    "--features that leave no column": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "y",
                   "--features", "x1", "--drop", "x1"],
        ["No feature column is left"]),
    "duplicate column names": (
        lambda d: ["regression", "--data", _write(d / "dup.csv", "x1,y,y,label\n"
                                                  + "1,2,3,4\n" * 12), "--target", "y"],
        ["more than once", "'y' (columns 2, 3)"]),
    "a folder as --data": (
        lambda d: ["regression", "--data", d, "--target", "y"], ["is a folder"]),
    "a damaged Excel workbook": (
        lambda d: ["regression", "--data", _write_bytes(d / "book.xlsx", b"PK\x03\x04rest"),
                   "--target", "y"], ["Could not read", "as a spreadsheet"]),
    "a zip named as a CSV": (
        lambda d: ["regression", "--data", _write_bytes(d / "book.csv", b"PK\x03\x04rest"),
                   "--target", "y"], ["zip archive or a spreadsheet", ".xlsx"]),
    "neither CSV nor Parquet": (
        lambda d: ["regression", "--data", _write(d / "data.json", "[]"), "--target", "y"],
        ["CSV", "Parquet", ".json"]),
    "a damaged Parquet file": (
        lambda d: ["regression", "--data", _write_bytes(d / "t.parquet", b"PAR1 broken"),
                   "--target", "y"], ["Could not read", "Parquet"]),
    "--test-data with other columns": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "y",
                   "--test-data", helpers.write_csv(d / "t.csv", ["x1", "x2", "x9", "y"],
                                                     [[1, 2, 3, 4]] * 5)],
        ["--test-data has other columns", "lacks x3", "has x9"]),
    "--val-data without --data": (
        lambda d: ["regression", "--val-data", _regression(d / "r.csv")], ["go with --data"]),
    "regression-looking target for binary": (
        lambda d: ["binary", "--data", _integer_target(d / "r.csv"), "--target", "y"],
        ["quantity", "regression"]),
    "constant target": (
        lambda d: ["regression", "--data", _regression(d / "r.csv", _set(range(48), "y", "7.25")),
                   "--target", "y"],
        ["same value in every row", "7.25"]),
    "three classes for binary": (
        lambda d: ["binary", "--data", helpers.multiclass_csv(d / "m.csv"),
                   "--target", "species"],
        ["3 classes", "--positive-class", "multiclass"]),
    "unknown positive class": (
        lambda d: ["binary", "--data", helpers.multiclass_csv(d / "m.csv"),
                   "--target", "species", "--positive-class", "virginca"],
        ["'virginca'", "Did you mean 'virginica'"]),
    "fractional target for binary": (
        lambda d: ["binary", "--data", _regression(d / "r.csv"), "--target", "y"],
        ["fractional", "regression"]),
    "fractional target for multiclass": (
        lambda d: ["multiclass", "--data", _regression(d / "r.csv"), "--target", "y"],
        ["fractional", "regression"]),
    "text target for regression": (
        lambda d: ["regression", "--data", helpers.multiclass_csv(d / "m.csv"),
                   "--target", "species"],
        ["not numeric", "binary", "multiclass"]),
    "single class": (
        lambda d: ["binary", "--data", helpers.binary_csv(d / "b.csv", labels=("no", "no")),
                   "--target", "churned"],
        ["single class"]),
    "too few rows": (
        lambda d: ["regression", "--data", helpers.regression_csv(d / "r.csv", rows=6),
                   "--target", "y"],
        ["Only 6 data rows", "at least 10"]),
    "unknown recipe": (lambda d: ["regresion"], ["Unknown recipe", "Did you mean 'regression'"]),
    "unknown preset": (
        lambda d: ["multiclass-dropuot"], ["Unknown recipe or preset", "'multiclass-dropout'"]),
    "unknown --set key": (
        lambda d: ["regression", "--set", "epoch=1"], ["'epoch'", "Did you mean 'epochs'"]),
    "wrong type": (lambda d: ["regression", "--set", "epochs=abc"], ["epochs", "int", "'abc'"]),
    "unknown dataset": (lambda d: ["multiclass", "--dataset", "mnst"], ["Unknown dataset"]),
    "--data and --dataset": (
        lambda d: ["regression", "--data", _regression(d / "r.csv"), "--target", "y",
                   "--dataset", "wine"], ["--data or --dataset"]),
    "--target with a built-in dataset": (
        lambda d: ["regression", "--target", "ash"], ["predicts 'alcohol'"]),
    "no recipe": (lambda d: [], ["Name a recipe"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_before_a_run_exists(case, tmp_path, runs_root):
    make_args, words = CASES[case]
    result = helpers.invoke("train", *make_args(tmp_path), "--epochs", 1)
    helpers.assert_user_error(result, *words)
    assert helpers.run_folders(runs_root) == []


def test_offline_mnist_names_the_offline_default(monkeypatch, runs_root):
    import keras

    def offline():
        raise OSError("Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    result = helpers.invoke("train", "multiclass", "--dataset", "mnist", "--epochs", 1)
    helpers.assert_user_error(result, "Could not download MNIST", "digits")
    assert helpers.run_folders(runs_root) == []


def test_invalid_hyperparameter_is_a_clear_error(regression_csv):
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--epochs", 1, "--set", "dropout_rate=1.5")
    helpers.assert_user_error(result, "dropout_rate", "1.5")


def test_invalid_hyperparameter_creates_no_run(regression_csv, runs_root):
    helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                   "--epochs", 1, "--set", "dropout_rate=1.5")
    assert helpers.run_folders(runs_root) == []


# --- The loader on good input ----------------------------------------------------------------


def _load(path, task, target, positive_class=None):
    source = Source(data=str(path), target=target, positive_class=positive_class)
    return tabular.load(source, task, None, seed=0, val_fraction=0.2, test_fraction=0.2)


def test_semicolon_delimiter_is_sniffed(semicolon_csv):
    data = _load(semicolon_csv, "binary", "churned")
    assert data.meta["features"] == ["x1", "x2", "x3"]
    assert data.train[0].shape[1] == 3


def test_categorical_column_is_one_hot(categorical_csv):
    data = _load(categorical_csv, "regression", "y")
    features = data.meta["features"]
    assert features == ["x1", "x2", "x3", "color=blue", "color=green", "color=red"]
    one_hot = data.train[0][:, 3:]
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.sum(axis=1), 1.0)


def test_scaler_is_fitted_on_the_training_split_only(regression_csv):
    data = _load(regression_csv, "regression", "y")
    x_train = data.train[0][:, :3]
    np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-4)
    assert not np.allclose(data.val[0][:, :3].mean(axis=0), 0.0, atol=1e-3)


def test_splits_are_disjoint_and_cover_every_row(multiclass_csv):
    data = _load(multiclass_csv, "multiclass", "species")
    sizes = [len(data.train[1]), len(data.val[1]), len(data.test[1])]
    assert sum(sizes) == 60 and min(sizes) >= 10
    rows = np.vstack([data.train[0], data.val[0], data.test[0]])
    assert len(np.unique(rows, axis=0)) == 60
    # Stratified: each split holds every class.
    for _, y in (data.train, data.val, data.test):
        assert set(y.tolist()) == {0, 1, 2}


def test_string_labels_keep_their_names(multiclass_csv):
    data = _load(multiclass_csv, "multiclass", "species")
    assert data.meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert data.train[1].dtype == np.int32


@pytest.mark.parametrize("labels, positive", [
    (("no", "yes"), "yes"),
    (("yes", "no"), "yes"),  # The order in the file does not matter.
    (("0", "1"), "1"),
    (("benign", "malignant"), "malignant"),  # No positive word: the second in sort order.
])
def test_binary_positive_class(tmp_path, labels, positive):
    path = helpers.binary_csv(tmp_path / "b.csv", labels=labels)
    data = _load(path, "binary", "churned")
    assert data.meta["positive_class"] == positive
    header, rows = helpers.binary_rows(labels=labels)
    expected = np.array([row[-1] == positive for row in rows], dtype="float32")
    y_all = np.concatenate([data.train[1], data.val[1], data.test[1]])
    assert sorted(y_all.tolist()) == sorted(expected.tolist())


def test_fingerprint_changes_with_the_data(tmp_path):
    first = _load(helpers.regression_csv(tmp_path / "a.csv"), "regression", "y").fingerprint
    same = _load(helpers.regression_csv(tmp_path / "b.csv"), "regression", "y").fingerprint
    other = _load(helpers.regression_csv(tmp_path / "c.csv", seed=1), "regression", "y")
    assert first == same != other.fingerprint


def test_new_rows_lacking_a_feature_column_are_refused():
    import pandas as pd

    meta = {"schema": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}],
            "columns": []}
    with pytest.raises(DlrefError, match="lacks feature columns .*b"):
        tabular.features_for(pd.DataFrame({"a": [1.0]}), meta, "new.csv")


def test_unseen_category_becomes_all_zeros_and_is_counted():
    import pandas as pd

    from dlref.data import columns

    encoding = [{"name": "color", "kind": "categorical", "categories": ["blue", "red"]}]
    x, unseen = columns.encode(pd.DataFrame({"color": ["red", "purple"]}), encoding)
    np.testing.assert_array_equal(x, [[0.0, 1.0], [0.0, 0.0]])
    assert unseen == {"color": (1, "purple")}


def test_free_text_column_is_left_out_with_a_notice(tmp_path):
    header, rows = helpers.regression_rows()
    _text_column(header, rows)
    data = _load(helpers.write_csv(tmp_path / "r.csv", header, rows), "regression", "y")
    assert "comment" in data.meta["left_out"]
    assert data.meta["features"] == ["x1", "x2", "x3"]
    assert any("Left out: comment" in line and "--features" in line for line in data.notes)
