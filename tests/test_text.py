"""The text recipe (chapter 10): messy CSV exports, class folders, the LSTM and CNN networks,
pretrained vectors, TF-IDF beside the network, predict on raw text and the refusals. Tiny
corpora, 1 epoch, small layers."""

import json

import numpy as np
import pytest

import helpers
from dlref.data import Source
from dlref.data import text as textlib
from dlref.errors import DlrefError

GOOD = ["wonderful", "moving", "brilliant", "funny", "superb", "gripping", "charming"]
BAD = ["boring", "dull", "awful", "clumsy", "tedious", "bland", "annoying"]
FILLER = ["the", "film", "plot", "actors", "was", "story", "and", "a", "scene", "director"]
SMALL = ["--set", "embedding_dim=8", "--set", "lstm_units=4", "--set", "filters=8",
         "--set", "dense_units=8", "--epochs", 1]


def _review(rng, words):
    chosen = list(rng.choice(FILLER, 8)) + list(rng.choice(words, 3))
    rng.shuffle(chosen)
    return " ".join(chosen).capitalize() + "."


def _reviews(rows=80, seed=0, classes=(("positive", GOOD), ("negative", BAD))):
    rng = np.random.default_rng(seed)
    return [(_review(rng, classes[i % len(classes)][1]), classes[i % len(classes)][0])
            for i in range(rows)]


def _messy_csv(path, rows=80):
    """What a spreadsheet export of reviews looks like: Latin-1 bytes, markup, a header with
    stray spaces, empty unnamed trailing columns, an empty text and a row without a label."""
    lines = ["id ,review, sentiment ,,"]
    for i, (review, label) in enumerate(_reviews(rows)):
        if i == 3:
            review = "Café scene<br /><br />was " + review  # é in Latin-1 below.
        lines.append(f'{i},"{review}",{label},,')
    lines.append(f'{rows},"",positive,,')
    lines.append(f'{rows + 1},"An unlabelled review.",,,')
    path.write_bytes("\n".join(lines).encode("latin-1"))
    return path


def _folder(root, classes=3, files=20, seed=0):
    """One sub-folder of text files per class (files without a suffix, as in 20 newsgroups),
    one of them Latin-1."""
    topics = [("sport", ["goal", "match", "team", "score"]),
              ("space", ["orbit", "rocket", "planet", "launch"]),
              ("cooking", ["recipe", "oven", "flour", "taste"])][:classes]
    for index, (review, label) in enumerate(_reviews(files * classes, seed, topics)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:04d}").write_bytes(review.encode("utf-8"))
    (root / "sport" / "9999").write_bytes("Le match était très animé".encode("latin-1"))
    return root


def _train(*args):
    return helpers.invoke("train", "text", *args, *SMALL)


# --- Reading -----------------------------------------------------------------------------------


def test_a_messy_export_is_read_with_the_text_column_guessed(tmp_path):
    path = _messy_csv(tmp_path / "reviews.csv")
    found = textlib.read(Source(data=str(path), target="sentiment"))
    assert found.text_column == "review" and found.target == "sentiment"
    notes = " ".join(found.notes)
    assert "Latin-1" in notes and "Text column: 'review'" in notes
    assert textlib.clean(found.texts)[3].startswith("Café scene was ")


def test_typographic_punctuation_is_stripped_like_plain():
    import pandas as pd

    from dlref.data import words

    cleaned = textlib.clean(pd.Series(["“Superb” – I’d see it again…", '"Superb" - I\'d see it']))
    layer = words.vectorizer(6, vocabulary=["superb", "id", "see", "it", "again"])
    ids = words.to_ids(layer, cleaned, 6)
    assert list(ids[0][:5]) == list(ids[1][:4]) + [6]  # again: the 5th word, id 6.


def test_the_text_column_guess_passes_over_dates_written_as_text():
    import pandas as pd

    notes = ["great fun", "dull", "moving", "too long"] * 5
    frame = pd.DataFrame({  # Dates as a workbook writes them: longer than the notes.
        "signed": [f"2020-01-{i + 1:02d} 00:00:00" for i in range(20)], "note": notes,
        "label": ["pos", "neg"] * 10})
    assert frame["signed"].str.len().sum() > frame["note"].str.len().sum()
    assert textlib._guess_text_column(frame, "label", "r.csv") == "note"


def test_class_folders_and_a_train_test_layout(tmp_path):
    _folder(tmp_path / "train")
    _folder(tmp_path / "test", seed=1)
    (tmp_path / "train" / "unsup").mkdir()
    (tmp_path / "train" / "unsup" / "1.txt").write_text("no label here")
    (tmp_path / "train" / "space" / "9998").write_text("La fusée décolle — enfin",
                                                       encoding="utf-16")  # Notepad's Unicode.
    more = tmp_path / "train" / "space" / "more"  # Texts one folder deeper; other files.
    more.mkdir()
    (more / "9997.TXT").write_text("rocket launch into orbit", encoding="utf-8")
    for name in ("notes.md", "page.html", "Thumbs.db", ".DS_Store"):
        (tmp_path / "train" / "space" / name).write_text("not a text of the class")
    found = textlib.read_folder(tmp_path)
    assert sorted(found.labels.unique()) == ["cooking", "space", "sport"]
    assert "rocket launch into orbit" in list(found.texts)
    assert "not a text of the class" not in list(found.texts)
    assert ("Ignored 2 files in train whose extension is not a text file's (.md 1, .html 1); "
            "dlref reads .txt files and files without an extension.") in [
        note.replace(str(tmp_path) + "/", "") for note in found.notes]
    assert found.test is not None and len(found.test[0]) == 61
    assert "unlabelled" in " ".join(found.notes)
    (note,) = [note for note in found.notes if note.startswith("Not UTF-8 in train")]
    assert "1 file as Windows-1252 (Latin-1)" in note and "1 file as UTF-16" in note
    assert "La fusée décolle — enfin" in list(found.texts)


def test_a_zipped_train_valid_test_layout_is_used_as_given(tmp_path):
    root = tmp_path / "download" / "news"  # The zip's own folder, and a Mac's __MACOSX.
    _folder(root / "Training")
    _folder(root / "valid", files=5, seed=1)
    _folder(root / "test", files=7, seed=2)
    (tmp_path / "download" / "__MACOSX" / "news").mkdir(parents=True)
    from dlref.recipes import text

    data = textlib.load(Source(data=str(tmp_path / "download")), text.Config(sequence_length=20))
    assert (len(data.train[1]), len(data.val[1]), len(data.test[1])) == (61, 16, 22)
    notes = " ".join(data.notes)
    assert "Reading download/news, the only folder in download" in notes.replace(
        str(tmp_path) + "/", "")
    assert "used as given: Training (train), valid (val), test." in notes
    assert "validation 16 (its own validation set), test 22 (its own test set)" in notes


def test_the_built_in_reviews_load_offline():
    found = textlib.read(Source())
    assert len(found.texts) == 25_000 and set(found.labels) == {"negative", "positive"}
    assert len(textlib.read(Source(dataset="rotten_tomatoes")).texts) == 8_530


def test_a_download_without_network_names_the_offline_default(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DlrefError, match="Could not download IMDB.*built-in"):
        textlib.read(Source(dataset="imdb"))


def test_the_vocabulary_is_fitted_on_the_training_split_only(tmp_path):
    import dataclasses

    from dlref.recipes import text

    path = helpers.write_csv(tmp_path / "r.csv", ["text", "label"], _reviews(60))
    config = dataclasses.replace(text.Config(), sequence_length=6)
    data = text.load_data(config, Source(data=str(path), target="label"))
    vocabulary = set(data.meta["vocabulary"])
    test_only = {w for t in data.extra["texts"]["test"] for w in t.lower().strip(".").split()}
    train = {w for t in data.extra["texts"]["train"] for w in t.lower().strip(".").split()}
    assert vocabulary - {"", "[UNK]"} <= train and (test_only - train).isdisjoint(vocabulary)
    assert data.train[0].shape[1] == 6 and data.train[0].dtype == np.int32
    again = text.load_data(config, Source(data=str(path), target="label"))  # As a resume does.
    assert again.fingerprint == data.fingerprint
    np.testing.assert_array_equal(again.train[0], data.train[0])


def test_labels_written_two_ways_are_warned_about(tmp_path):
    import dataclasses

    from dlref.recipes import text

    rows = [(review, label.upper() if index % 9 == 0 else label)
            for index, (review, label) in enumerate(_reviews(90))]
    path = helpers.write_csv(tmp_path / "r.csv", ["text", "label"], rows)
    config = dataclasses.replace(text.Config(), sequence_length=6)
    data = text.load_data(config, Source(data=str(path), target="label"))
    assert len(data.meta["classes"]) == 4  # Kept apart, as the file writes them.
    two_ways = [line for line in data.warnings if "differ only in letter case" in line]
    assert len(two_ways) == 2 and "'NEGATIVE' and 'negative'" in " ".join(two_ways)
    # 5 rows each of 'NEGATIVE' and 'POSITIVE' among 90: a split without one is warned about.
    by_split = set(data.warnings) - set(two_ways)
    assert by_split  # This split leaves 'POSITIVE' out of validation.
    for line in by_split:
        assert "has 5 rows (" in line and ("'NEGATIVE'" in line or "'POSITIVE'" in line), line
    clean = helpers.write_csv(tmp_path / "clean.csv", ["text", "label"], _reviews(60))
    assert not text.load_data(config, Source(data=str(clean), target="label")).warnings


# --- Training, evaluating, predicting ----------------------------------------------------------


def test_lstm_on_a_messy_export_then_predict_and_evaluate(tmp_path, runs_root):
    path = _messy_csv(tmp_path / "reviews.csv")
    result = _train("--data", path, "--target", "sentiment", "--set", "model=lstm")
    helpers.assert_ok(result)
    assert "Dropped 1 row" in result.output and "with an empty text" in result.output
    assert "classical = TF-IDF + logistic regression" in result.output
    run = helpers.only_run(runs_root, "text")
    metrics = helpers.read_json(run / "metrics.json")["metrics"]
    assert {"model", "trivial", "classical"} <= set(metrics["roc_auc"])
    assert (run / "plots" / "roc_curve.png").is_file()
    assert "review" == helpers.read_json(run / "artifacts" / "meta.json")["text_column"]

    result = helpers.invoke("predict", run, "--text", "A superb, gripping film.",
                            "--text", "Dull and tedious.", "--text", "  ")
    helpers.assert_ok(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "text,predicted_sentiment,probability_positive" and len(lines) == 4
    assert "Warning: 1 text is empty" in result.stderr

    new = helpers.write_csv(tmp_path / "new.csv", ["review"], [["Charming"], ["Bland plot"]])
    helpers.assert_ok(helpers.invoke("predict", run, "--data", new))
    assert (tmp_path / "new.predictions.csv").read_text().count("\n") == 3

    labelled = helpers.write_csv(tmp_path / "more.csv", ["review", "sentiment"], _reviews(20, 5))
    result = helpers.invoke("evaluate", run, "--data", labelled, "--json")
    helpers.assert_ok(result)
    assert "roc_auc" in result.output


def test_cnn_multiclass_from_class_folders(tmp_path, runs_root):
    folder = _folder(tmp_path / "topics")
    helpers.assert_ok(_train("--data", folder))
    run = helpers.only_run(runs_root, "text")
    metrics = helpers.read_json(run / "metrics.json")["metrics"]
    assert "f1_macro" in metrics and "classical" in metrics["accuracy"]
    new = tmp_path / "new"
    new.mkdir()
    (new / "a.txt").write_text("The rocket reached orbit")
    (new / "b.txt").write_text("La fusée a décollé", encoding="utf-16")
    (new / "c.bin").write_bytes(b"\x00\x01\x02 binary")
    helpers.assert_ok(helpers.invoke("predict", run, "--data", new))
    written = (tmp_path / "new.predictions.csv").read_text()
    assert written.startswith("file,predicted_class,probability_cooking") and "a.txt" in written
    assert "b.txt" in written and "c.bin" not in written
    layout = tmp_path / "topics-split"  # evaluate --data on train / test folders: the test one.
    _folder(layout / "train")
    _folder(layout / "test", files=4, seed=3)
    result = helpers.invoke("evaluate", run, "--data", layout, "--json")
    helpers.assert_ok(result)
    assert "the test folder of" in result.stderr
    report = json.loads(result.stdout)["report"]  # 13 texts: the test folder's 3 x 4 + 1.
    assert report.split("accuracy")[1].split()[1] == "13", report


def test_pretrained_vectors_start_the_embedding_and_stay_frozen(tmp_path, runs_root):
    from dlref.saved import load_model

    path = helpers.write_csv(tmp_path / "r.csv", ["text", "label"], _reviews(60))
    vectors = {word: np.round(np.linspace(-1, 1, 6) * (i + 1) / 10, 3)
               for i, word in enumerate(GOOD + ["film"])}
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items())
                     + "zebra 1 2 3 4 5 6\n")
    result = _train("--data", path, "--target", "label", "--embeddings", glove)
    helpers.assert_ok(result)
    assert "Pretrained vectors (6 numbers per word) for 8 of" in result.output
    run = helpers.only_run(runs_root, "text")
    vocabulary = helpers.read_json(run / "artifacts" / "meta.json")["vocabulary"]
    weights = load_model(run / "model.keras").get_layer("embedding").get_weights()[0]
    assert weights.shape[1] == 6
    np.testing.assert_allclose(weights[vocabulary.index("film")], vectors["film"], atol=1e-6)


# --- Refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, args, words", [
    ([["fine film", "good"]] * 30, ["--target", "label"], ["single class"]),
    ([["", "good"], ["", "bad"]] * 15, ["--target", "label"], ["empty in every row"]),
    ([["a film", "good"]] * 30, ["--target", "label", "--text-column", "txt"],
     ["no column 'txt'", "Did you mean 'text'"]),
    ([["a film", "good"]] * 30, ["--target", "label", "--date-column", "text"],
     ["--date-column goes with the timeseries recipe"]),
    ([["a film", "good"]] * 30, ["--target", "label", "--drop", "x"], ["go with tables"]),
    ([["a film", "good"]] * 30, ["--target", "label", "--text-column", "label"],
     ["both name 'label'"]),
])
def test_bad_input_is_refused_with_exit_2(tmp_path, runs_root, rows, args, words):
    path = helpers.write_csv(tmp_path / "r.csv", ["text", "label"], rows)
    helpers.assert_user_error(_train("--data", path, *args), *words)
    assert not runs_root.exists() or not list(runs_root.glob("text/*"))


def test_numbers_as_text_and_a_bad_vectors_file_are_refused(tmp_path):
    numbers = helpers.write_csv(tmp_path / "n.csv", ["score", "label"],
                                [[i, "ab"[i % 2]] for i in range(30)])
    helpers.assert_user_error(_train("--data", numbers, "--target", "label",
                                     "--text-column", "score"), "holds numbers, not text")
    path = helpers.write_csv(tmp_path / "r.csv", ["text", "label"], _reviews(40))
    glove = tmp_path / "glove.txt"
    glove.write_text("film 0.1 0.2 0.3\nplot 0.1 0.2\n")
    helpers.assert_user_error(_train("--data", path, "--target", "label", "--embeddings", glove),
                              "line 2: 2 numbers after the word, where line 1 has 3")


def test_text_options_go_with_their_recipes(tmp_path, binary_csv, trained):
    helpers.assert_user_error(
        helpers.invoke("train", "binary", "--data", binary_csv, "--target", "churned",
                       "--text-column", "x1"), "--text-column goes with the text recipe")
    helpers.assert_user_error(
        helpers.invoke("predict", trained["binary"]["run"], "--text", "hello"),
        "--text goes with the text and seq2seq recipes")
    helpers.assert_user_error(
        helpers.invoke("predict", trained["binary"]["run"], "--text", "hi", "--data", binary_csv),
        "not both")


def test_free_text_or_a_folder_chooses_the_text_recipe(tmp_path, runs_root):
    from dlref.data.target import task_of

    reviews = helpers.write_csv(tmp_path / "r.csv", ["id", "review", "label"],
                                [[i, text, label] for i, (text, label) in enumerate(_reviews(40))])
    assert task_of(Source(data=str(reviews), target="label"))[0] == "text"
    short = helpers.write_csv(tmp_path / "s.csv", ["color", "label"],
                              [[c, c == "red"] for c in ["red", "green", "blue", "red"] * 10])
    assert task_of(Source(data=str(short), target="label"))[0] == "binary"
    result = helpers.invoke("train", "--data", _folder(tmp_path / "topics"), *SMALL)
    helpers.assert_ok(result)
    assert "Recipe: text (a folder" in result.output


def test_a_given_test_set_is_used_whole_and_fingerprinted(tmp_path):
    from dlref.recipes import text

    _folder(tmp_path / "train")
    _folder(tmp_path / "test", seed=1)
    source = Source(data=str(tmp_path))
    data = text.load_data(text.Config(), source)
    assert len(data.test[1]) == 61 and len(data.train[1]) + len(data.val[1]) == 61
    (tmp_path / "test" / "space" / "0001").write_text("A changed test text about orbits")
    assert text.load_data(text.Config(), source).fingerprint != data.fingerprint


@pytest.mark.parametrize("recipe, values, allowed", [
    ("text", {"test_fraction": 0.0}, True),  # A given test set (a folder's test/) replaces it.
    ("timeseries", {"test_fraction": 0.0}, False),
    ("seq2seq", {"val_fraction": 0.5, "test_fraction": 0.4}, False),
    ("text", {"val_fraction": 0.0}, False),
])
def test_the_sequence_recipes_check_their_held_out_shares(recipe, values, allowed):
    from dlref import registry

    module = registry.load(recipe)
    config = module.Config(**values)
    if allowed:
        module.check_config(config)
    else:
        with pytest.raises(DlrefError, match="val_fraction and test_fraction must be below 1"):
            module.check_config(config)
