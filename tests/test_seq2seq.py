"""The seq2seq recipe (chapter 11): reading messy pair files, teacher forcing, greedy decoding
from the trained layers, the metrics beside the trivial baseline, sample translations in
TensorBoard, predict --text / --data, evaluate, tuning and the refusals. Tiny data, 1 epoch."""

import io

import pandas as pd
import pytest

import helpers
from dlref.data import Source, pairs
from dlref.errors import DlrefError

SMALL = ["--set", "units=16", "--set", "sample_translations=2", "--epochs", 1]


def _numbers(count=40, start=0):
    from num2words import num2words

    return [(num2words(n), num2words(n, lang="fr")) for n in range(start, start + count)]


def _messy_tsv(path, count=40):
    """An anki-style export: a BOM, Windows line ends, a third (attribution) column and a
    blank line."""
    lines = [f"{en}\t{fr}\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}"
             for i, (en, fr) in enumerate(_numbers(count))]
    lines.insert(5, "")
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One completed 1-epoch run on the messy file, shared by the read-only tests."""
    import keras

    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("seq2seq")
    data = _messy_tsv(base / "numbers.tsv")
    result = helpers.invoke("train", "seq2seq", "--data", data, *SMALL,
                            "--runs-dir", base / "runs")
    helpers.assert_ok(result)
    return {"run": helpers.only_run(base / "runs", "seq2seq"), "data": data,
            "output": result.output}


# --- Reading -------------------------------------------------------------------------------------


def test_a_messy_pair_file_is_read(tmp_path):
    found = pairs.read_tsv(_messy_tsv(tmp_path / "p.tsv"))
    assert len(found.sources) == 40 and found.sources[0] == "zero"
    assert found.targets[21] == "vingt et un"  # No attribution, no \r, no BOM.
    assert "Columns after the second ignored on 40 lines" in " ".join(found.notes)


def test_empty_cells_long_pairs_and_latin1(tmp_path):
    path = tmp_path / "p.tsv"
    rows = [f"{en}\t{fr}" for en, fr in _numbers(20)] + ["\tvide", "empty\t ", "x" * 90 + "\ty"]
    rows += ["one\tun", "one\tune"]  # The same pair again (dropped), another translation.
    path.write_bytes("\n".join(rows + ["caf\u00e9\tcaf\u00e9"]).encode("latin-1"))
    found = pairs.read(Source(data=str(path)), max_length=80, num_samples=0)
    notes = " ".join(found.notes)
    assert "not UTF-8: read it as Windows-1252 (Latin-1)" in notes
    assert "Dropped 2 pairs with an empty source or target" in notes
    assert "Left out 1 pair longer than 80 characters" in notes
    assert "Dropped 1 repeated pair (the same text and translation" in notes
    assert found.sources[-1] == "caf\u00e9" and len(found.sources) == 22
    assert found.targets.count("un") == 1 and "une" in found.targets
    path.write_text("\n".join(rows + ["caf\u00e9\tcaf\u00e9 \u2014 \u00e0 bient\u00f4t"]),
                    encoding="utf-16")  # Notepad's "Unicode".
    found = pairs.read(Source(data=str(path)), max_length=80, num_samples=0)
    assert "not UTF-8: read it as UTF-16" in " ".join(found.notes)
    assert found.targets[-1] == "caf\u00e9 \u2014 \u00e0 bient\u00f4t"


def test_teacher_forcing_arrays():
    meta = {"source_characters": list("ab"), "target_characters": list("xyz")}
    x, y = pairs.encode_pairs(["ab", "b"], ["xz", "y"], meta)
    # Ids: 0 pad, 1 start, 2 end, 3 unknown, then the characters.
    source, decoder_input = x
    assert source.tolist() == [[4, 5], [5, 0]]
    assert decoder_input.tolist() == [[1, 4, 6], [1, 5, 0]]
    assert y.tolist() == [[4, 6, 2], [5, 2, 0]]
    assert pairs.encode(["a?"], meta["source_characters"]).tolist() == [[4, pairs.UNKNOWN]]
    assert pairs.decode([4, 6, 2, 5], meta["target_characters"]) == "xz"


def test_builtin_numbers_load_and_hold_out_whole_numbers():
    from dlref.recipes import seq2seq

    config = seq2seq.Config(num_samples=300)
    data = seq2seq.load_data(config, Source())
    again = seq2seq.load_data(config, Source())
    assert data.fingerprint == again.fingerprint  # Deterministic: resume and evaluate need it.
    assert data.meta["source"].endswith("(built-in)")
    train, test = data.extra["texts"]["train"], data.extra["texts"]["test"]
    assert (len(train[0]), len(test[0])) == (240, 30)
    assert not set(train[0]) & set(test[0])
    english = dict(zip(*train, strict=True))
    assert all(english[en] for en in train[0]) and "cent" in " ".join(train[1])


def test_scores_and_edit_distance():
    from dlref.recipes import seq2seq

    assert seq2seq.edit_distance("kitten", "sitting") == 3
    assert seq2seq.edit_distance("", "abc") == 3
    scores = seq2seq.translation_scores(["abcd", "ef"], ["abcd", "xf"])
    assert scores == {"exact_match": 0.5, "char_error_rate": 1 / 6}


def test_offline_download_names_the_builtin_default(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DlrefError, match="drop --dataset .built-in: num2words"):
        pairs.named("fra")


# --- Training, evaluation, prediction ------------------------------------------------------------


def test_train_on_a_messy_file(trained):
    from dlref import saved

    run_dir = trained["run"]
    assert "Columns after the second ignored" in trained["output"]
    assert "(reference " in trained["output"]  # The sample translations after the epoch.
    metrics = helpers.read_json(run_dir / "metrics.json")["metrics"]
    assert list(metrics) == ["exact_match", "char_error_rate"]
    for row in metrics.values():
        assert set(row) == {"model", "trivial"}
    meta = helpers.read_json(run_dir / "artifacts" / "meta.json")
    assert "é" in meta["target_characters"] and meta["trivial"]
    saved.load_model(run_dir / "model.keras")  # Keras safe mode: no Lambda, no custom object.


def test_sample_translations_are_tensorboard_text(trained):
    import tensorflow as tf

    texts = []
    for path in (trained["run"] / "logs" / "samples").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "text":
                    texts.append((event.step, tf.make_ndarray(value.tensor).item().decode()))
    assert [step for step, _ in texts] == [0]
    assert texts[0][1].startswith("| source | reference | model |")


def test_predict_text_and_a_file(trained, tmp_path):
    result = helpers.invoke("predict", trained["run"], "--text", "three", "--text", "ßeven")
    helpers.assert_ok(result)
    assert "never seen in training ('ß')" in result.output
    table = pd.read_csv(io.StringIO(result.stdout), keep_default_na=False)
    assert list(table.columns) == ["source", "translation"]
    assert list(table["source"]) == ["three", "ßeven"]
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("one\n\ntwenty-two\tvingt-deux\n", encoding="utf-8")
    result = helpers.invoke("predict", trained["run"], "--data", inputs)
    helpers.assert_ok(result)
    frame = pd.read_csv(tmp_path / "inputs.predictions.csv", keep_default_na=False)
    assert list(frame.columns) == ["source", "translation"]
    assert list(frame["source"]) == ["one", "twenty-two"]


def test_evaluate_its_test_split_and_a_file(trained, tmp_path):
    own = helpers.invoke("evaluate", trained["run"], "--json")
    helpers.assert_ok(own)
    saved = helpers.read_json(trained["run"] / "metrics.json")["metrics"]
    assert f'"model": {saved["exact_match"]["model"]}' in own.output
    other = tmp_path / "other.tsv"
    other.write_text("".join(f"{en}\t{fr}\n" for en, fr in _numbers(5, start=100)))
    result = helpers.invoke("evaluate", trained["run"], "--data", other)
    helpers.assert_ok(result)
    assert "char_error_rate" in result.output and "5 test sources" in result.output


# --- Refusals ------------------------------------------------------------------------------------


def test_a_line_without_a_tab_is_refused_with_its_number(tmp_path, runs_root):
    path = tmp_path / "p.tsv"
    path.write_text("one\tun\ntwo\tdeux\nthree trois\n" + "".join(
        f"{en}\t{fr}\n" for en, fr in _numbers(20)))
    helpers.assert_user_error(helpers.invoke("train", "seq2seq", "--data", path, *SMALL),
                              "no tab on line 3")
    assert helpers.run_folders(runs_root) == []


@pytest.mark.parametrize("option, words", [
    (["--target", "fr"], ["--target go with tables"]),
    (["--date-column", "day"], ["--date-column goes with the timeseries recipe"]),
    (["--text-column", "text"], ["--text-column goes with the text recipe"]),
    (["--embeddings", "glove.txt"], ["--embeddings goes with the text recipe"]),
])
def test_options_of_other_recipes_are_refused(option, words, tmp_path):
    path = _messy_tsv(tmp_path / "p.tsv")
    helpers.assert_user_error(helpers.invoke("train", "seq2seq", "--data", path, *option,
                                             *SMALL), *words)


def test_too_few_pairs_and_unknown_dataset(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("one\tun\ntwo\tdeux\n")
    helpers.assert_user_error(helpers.invoke("train", "seq2seq", "--data", path, *SMALL),
                              "2 usable pairs, too few")
    helpers.assert_user_error(helpers.invoke("train", "seq2seq", "--dataset", "deu", *SMALL),
                              "Unknown pair dataset 'deu'", "fra")


# --- Tuning --------------------------------------------------------------------------------------


def test_search_space_defaults_build_the_book_model(tmp_path):
    import keras_tuner

    from dlref.recipes import seq2seq

    config = seq2seq.Config(num_samples=40)
    assert seq2seq.search_space(keras_tuner.HyperParameters(), config) == config
    data = seq2seq.load_data(config, Source(data=str(_messy_tsv(tmp_path / "p.tsv"))))
    model = seq2seq.build_model(seq2seq.search_space(keras_tuner.HyperParameters(), config),
                                data)
    assert model.get_layer("encoder").units == model.get_layer("decoder").units == 256
    assert not model.get_layer("source_embedding").trainable  # One-hot, as in the book.


def test_tune_runs_a_trial(tmp_path, runs_root):
    data = _messy_tsv(tmp_path / "p.tsv")
    result = helpers.invoke("tune", "seq2seq", "--data", data, "--algorithm", "random",
                            "--max-trials", 1, "--max-epochs", 1, "--set", "units=16")
    helpers.assert_ok(result)
    run_dir = helpers.only_run(runs_root, "seq2seq")
    assert (run_dir / "best.toml").is_file()
    assert not list((run_dir / "logs").rglob("samples"))  # Nothing logged by the recipe.


# --- Ctrl-C, then --resume -----------------------------------------------------------------------


@pytest.mark.slow
def test_interrupt_then_resume(tmp_path, runs_root):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = _messy_tsv(tmp_path / "p.tsv")
    env = {**os.environ, "DLREF_RUNS_DIR": str(runs_root), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dlref.cli", "train", "seq2seq", "--data", str(data),
         "--epochs", "300", "--set", "units=16", "--set", "early_stopping_patience=0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        folders = helpers.run_folders(runs_root, "seq2seq")
        if folders and (folders[0] / "history.csv").is_file() and len(
                helpers.history_epochs(folders[0])) >= 2:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=90)
    assert process.returncode == 130, (out, err)
    run_dir = helpers.only_run(runs_root, "seq2seq")
    done = len(helpers.history_epochs(run_dir))
    result = helpers.invoke("train", "--resume", run_dir, "--epochs", done + 1)
    helpers.assert_ok(result)
    assert helpers.history_epochs(run_dir) == list(range(done + 1))
    assert helpers.read_json(run_dir / "run.json")["status"] == "completed"
    samples = list((run_dir / "logs" / "samples").glob("events.out.tfevents.*"))
    assert len(samples) == 2  # One writer before the interruption, one after.


def test_no_break_spaces_are_read_as_spaces(tmp_path):
    path = tmp_path / "fra.txt"
    path.write_text("Go!\tVa\u00a0!\nRun!\tCours\u202f!\n" * 6, encoding="utf-8")
    found = pairs.read_tsv(path)
    assert found.targets[:2] == ["Va !", "Cours !"]


@pytest.mark.parametrize("first, line", [("\nEnglish\tFrench", 2),
                                         ("\ufeffsource\ttarget\tattribution", 1),
                                         ("EN\tFR\r", 1)])
def test_a_header_line_is_not_a_pair(first, line, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text(first + "\nGo.\tVa !\nHi.\tSalut.\nIt is English.\tC'est anglais.\n",
                    encoding="utf-8")
    found = pairs.read_tsv(path)
    assert found.sources == ["Go.", "Hi.", "It is English."]
    assert f"Skipped line {line}, a header" in " ".join(found.notes)
    path.write_text("English\tanglais\nFrench\tfrançais\n", encoding="utf-8")
    assert pairs.read_tsv(path).sources == ["English", "French"]  # Pairs: not header words.
    path.write_text(first + "\nGo.\tVa !\nHi.\n", encoding="utf-8")  # predict's input.
    inputs, notes = pairs.read_lines(path)
    assert inputs == ["Go.", "Hi."] and "Skipped the first line, a header" in notes[-1]
