"""The timeseries recipe (chapter 9): reading a messy series, splitting by time, the baselines,
the forecast plot, predict --horizon, evaluate --data and the refusals. Tiny series, 1 epoch."""

import datetime as dt
import itertools
import os

import numpy as np
import pandas as pd
import pytest

import helpers
from dlref.data import Source, series
from dlref.errors import DlrefError


def _daily(path, days=120, drop=(), blank=(), delimiter=",", shuffle_head=False, seed=0):
    """A daily series with a weekly cycle and a trend, a stray column, some rows left out
    (missing timestamps) and some values left empty."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(days):
        if i in drop:
            continue
        value = 50 + 0.1 * i + 5 * np.sin(2 * np.pi * i / 7) + rng.normal(0, 0.5)
        day = (dt.date(2024, 1, 1) + dt.timedelta(days=i)).isoformat()
        rows.append([day, "" if i in blank else f"{value:.3f}", "store-1"])
    if shuffle_head:
        rows[:10] = rows[:10][::-1]
    return helpers.write_csv(path, ["day", "sales", "store"], rows, delimiter=delimiter)


def _train(data, *extra, epochs=1):
    return helpers.invoke("train", "timeseries", "--data", data, "--target", "sales",
                          "--date-column", "day", "--epochs", epochs, "--set", "window=5",
                          *extra)


# --- Reading -------------------------------------------------------------------------------------


def test_a_messy_series_is_sorted_regularised_and_filled(tmp_path):
    path = _daily(tmp_path / "s.csv", drop=(20, 21, 50), blank=(7, 8), delimiter=";",
                  shuffle_head=True)
    found = series.read(Source(data=str(path), target="sales", date_column="day"))
    assert found.frequency == "D" and len(found.values) == 120
    assert found.dates.is_monotonic_increasing and not np.isnan(found.values).any()
    notes = " ".join(found.notes)
    assert "Rows sorted by date" in notes
    assert "5 gaps in 'sales' (3 missing timestamps and 2 empty values)" in notes
    # The gap is filled on the line between its neighbours.
    assert found.values[20] == pytest.approx(found.values[19] + (found.values[22]
                                                                 - found.values[19]) / 3)
    assert series.season_of(found) == 7 and series.season_of(found, 12) == 12


def test_a_row_repeated_whole_is_kept_once(tmp_path):
    path = _daily(tmp_path / "s.csv", days=60, blank=(12,))
    lines = path.read_text().splitlines(keepends=True)
    # Row 30 twice more, and the empty value of row 12 twice: an export appended to itself.
    path.write_text("".join(lines + [lines[31], lines[31], lines[13]]))
    found = series.read(Source(data=str(path), target="sales", date_column="day"))
    assert len(found.values) == 60 and found.frequency == "D"
    assert "Left out 3 repeated rows" in " ".join(found.notes)


def test_splits_follow_time_and_the_scaler_sees_the_training_period_only(tmp_path):
    found = series.read(Source(data=str(_daily(tmp_path / "s.csv", days=200)), target="sales",
                               date_column="day"))
    data = series.prepare(found, window=5, val_fraction=0.2, test_fraction=0.2)
    steps = data.extra["steps"]
    assert steps["train"][-1] < steps["val"][0] and steps["val"][-1] < steps["test"][0]
    assert len(steps["test"]) == len(data.test[1]) == round(194 * 0.2)
    training_changes = np.diff(found.values)[:steps["train"][-1] + 1]
    assert data.meta["scaler"] == {"low": training_changes.min(), "high": training_changes.max()}
    # Each window holds the changes just before its target, scaled to [-1, 1] in training.
    x, y = data.train
    assert x.shape == (len(steps["train"]), 5, 1) and -1 <= x.min() and x.max() <= 1
    assert y[3] == pytest.approx(x[4, -1, 0])


# --- Training, evaluation, prediction ------------------------------------------------------------


def test_train_reports_every_baseline_and_draws_them(tmp_path, runs_root):
    path = _daily(tmp_path / "s.csv", drop=(30,), blank=(12,))
    result = _train(path, "--name", "shop")
    helpers.assert_ok(result)
    assert "persistence = last value" in result.output
    assert "15 missing timestamp" not in result.output and "1 missing timestamp" in result.output
    run_dir = helpers.only_run(runs_root, "timeseries")
    metrics = helpers.read_json(run_dir / "metrics.json")["metrics"]
    assert set(metrics) == {"rmse", "mae", "mape"}
    assert set(metrics["mae"]) == {"model", "persistence", "seasonal_naive", "classical"}
    # Persistence on the test period, recomputed by hand from the filled series.
    found = series.read(Source(data=str(path), target="sales", date_column="day"))
    data = series.prepare(found, 5, 0.15, 0.15)
    steps = data.extra["steps"]["test"]
    expected = np.mean(np.abs(found.values[steps + 1] - found.values[steps]))
    assert metrics["mae"]["persistence"] == pytest.approx(expected)
    assert (run_dir / "plots" / "forecast.png").is_file()


def test_forecast_plot_draws_actual_and_each_predictor():
    from matplotlib import pyplot

    from dlref import reports

    when = pd.date_range("2024-01-01", periods=4, freq="D")
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    figure = reports.forecast(when, actual, {"model": actual + 0.5, "persistence": actual - 1,
                                             "classical": actual}, "sales")
    try:
        labels = [line.get_label() for line in figure.axes[0].lines]
        assert labels == ["actual", "model", "persistence", "ARIMA"]
        assert "model MAE 0.5" in figure.axes[0].get_title()
    finally:
        pyplot.close(figure)
    model = actual + np.array([0.5, 0.5, 0.5, 2.5])
    figure = reports.forecast(when, actual, {"model": model}, "sales", shown=3)
    try:  # A long period: its last steps drawn, the MAE over all of it.
        assert [len(line.get_xdata()) for line in figure.axes[0].lines] == [3, 3]
        assert figure.axes[0].get_title() == ("One-step-ahead forecasts, last 3 of 4 test "
                                              "steps (model MAE 1)")
    finally:
        pyplot.close(figure)


def test_predict_a_horizon_and_evaluate_another_file(tmp_path, runs_root):
    helpers.assert_ok(_train(_daily(tmp_path / "s.csv"), "--name", "shop"))
    recent = _daily(tmp_path / "recent.csv", days=140, seed=1)
    result = helpers.invoke("predict", "shop", "--data", recent, "--horizon", 3)
    helpers.assert_ok(result)
    assert "Wrote 3 predictions" in result.output
    frame = pd.read_csv(tmp_path / "recent.predictions.csv")
    assert list(frame.columns) == ["day", "forecast_sales"]
    assert list(frame["day"]) == ["2024-05-20", "2024-05-21", "2024-05-22"]
    assert frame["forecast_sales"].between(40, 80).all()
    evaluated = helpers.invoke("evaluate", "shop", "--data", recent, "--json")
    helpers.assert_ok(evaluated)
    assert '"persistence"' in evaluated.output and '"classical"' not in evaluated.output


# --- Refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lines, words", [
    ("day,sales\n2024-01-01,1\n2024-01-02,2\n", ["2 values", "too few for windows of 5"]),
    ("day,sales\n2024-01-01,1\n2024-01-02,abc\n", ["holds text", "file lines 3", "'abc'"]),
    ("day,sales\n2024-01-01,1\nsoon,2\n", ["dates pandas cannot read", "'soon'"]),
    ("day,sales\n2024-01-01,1\n2024-01-01,2\n", ["share a timestamp", "different values",
                                                  "aggregate"]),
    ("day,price\n2024-01-01,1\n", ["no column 'sales'", "day, price"]),
    ("day,sales\n2024-01-01,\n2024-01-02,\n", ["has no values"]),
])
def test_bad_series_are_refused(lines, words, tmp_path, runs_root):
    path = tmp_path / "bad.csv"
    path.write_text(lines)
    helpers.assert_user_error(_train(path), *words)
    assert helpers.run_folders(runs_root) == []


@pytest.mark.parametrize("option", [["--drop", "store"], ["--val-data", "x.csv"],
                                    ["--missing", "drop"], ["--positive-class", "a"]])
def test_table_options_are_refused_for_a_series(option, tmp_path):
    helpers.assert_user_error(_train(_daily(tmp_path / "s.csv"), *option), "go with tables")


def test_series_options_are_refused_elsewhere(trained, tmp_path):
    result = helpers.invoke("train", "regression", "--data", trained["regression"]["data"],
                            "--target", "y", "--date-column", "day")
    helpers.assert_user_error(result, "--date-column goes with the timeseries recipe")
    result = helpers.invoke("predict", trained["binary"]["run"], "--data",
                            trained["binary"]["data"], "--horizon", 2, "--runs-dir",
                            trained["binary"]["root"])
    helpers.assert_user_error(result, "--horizon goes with the timeseries recipe")
    with pytest.raises(DlrefError, match="--horizon must be at least 1"):
        from dlref.recipes import timeseries

        timeseries.predict(None, {"window": 5, "target": "sales"}, "x.csv", horizon=0)


def test_the_test_period_can_start_at_a_date(tmp_path):
    found = series.read(Source(data=str(_daily(tmp_path / "s.csv", days=200)), target="sales",
                               date_column="day"))
    data = series.prepare(found, 5, 0.15, 0.15, test_start="2024-06-01")
    first = data.extra["steps"]["test"][0] + 1
    assert str(found.dates[first].date()) == "2024-06-01"
    assert data.meta["test_start"] == "2024-06-01"
    for start, words in [("2030-01-01", "leaves no test period"), ("soon", "is not a date")]:
        with pytest.raises(DlrefError, match=words):
            series.prepare(found, 5, 0.15, 0.15, test_start=start)
    undated = series.Series(found.values, None, "sales", "s.csv")
    with pytest.raises(DlrefError, match="give --date-column"):
        series.prepare(undated, 5, 0.15, 0.15, test_start="2024-06-01")


def _read(tmp_path, text, target="v", date_column="d", name="s.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return series.read(Source(data=str(path), target=target, date_column=date_column))


@pytest.mark.parametrize("dates, first, frequency", [
    (["01/01/2023", "02/01/2023", "13/01/2023"], "2023-01-01", None),  # Day first: 13 says so.
    (["20230101", "20230102", "20230103"], "2023-01-01", "D"),  # YYYYMMDD numbers.
    (["2015-01-01T00:00:00+05:30", "2015-02-01T00:00:00+05:30", "2015-03-01T00:00:00+05:30"],
     "2015-01-01", "MS"),  # Local wall time, not UTC.
    (["2024-03-30T23:00:00+01:00", "2024-03-31T00:00:00+01:00", "2024-03-31T03:00:00+02:00"],
     "2024-03-30 22:00", None),  # Hours whose offset changes at DST: read as UTC.
    (["1704067200", "1704070800", "1704074400"], "2024-01-01", "h"),  # Unix seconds.
    (["1704067200000", "1704067260000", "1704067320000"], "2024-01-01", "min"),  # Milliseconds.
    (["45292", "45293", "45294"], "2024-01-01", "D"),  # Excel's day numbers.
])
def test_dates_people_write_are_read_as_meant(dates, first, frequency, tmp_path):
    rows = "".join(f"{d},{i}\n" for i, d in enumerate(dates))
    found = _read(tmp_path, "d,v\n" + rows)
    assert found.dates[0] == pd.Timestamp(first)
    if frequency:
        assert found.frequency == frequency
    if dates[0].startswith("01/01"):
        assert found.dates[1] == pd.Timestamp("2023-01-02")  # Not February the 1st.


@pytest.mark.parametrize("dates, first, second", [
    ([f"01/{m:02d}/2012" for m in range(1, 13)], "2012-01-01", "2012-02-01"),  # d/m, monthly
    ([f"{m:02d}/05/2012" for m in range(1, 13)], "2012-01-05", "2012-02-05"),  # m/d, monthly
])
def test_day_or_month_first_is_the_reading_with_regular_steps(dates, first, second, tmp_path):
    years = [d.replace("2012", str(y)) for y in (2012, 2013) for d in dates]
    rows = "".join(f"{d},{i}\n" for i, d in enumerate(years))
    found = _read(tmp_path, "d,v\n" + rows)
    assert list(found.dates[:2]) == [pd.Timestamp(first), pd.Timestamp(second)]
    assert len(found.dates) == 24


@pytest.mark.parametrize("day, clock", [
    ("%d/%m/%Y", "%H:%M:%S"),  # UCI's household power file: Date;Time;...
    ("%d/%m/%Y", "%H.%M.%S"),  # UCI's air quality file.
    ("%Y-%m-%d", "%I:%M %p"),  # 06:00 PM.
])
def test_a_date_column_and_a_time_column_are_read_together(day, clock, tmp_path):
    hours = pd.date_range("2024-03-09 18:00", periods=40, freq="h")
    rows = "".join(f"{h.strftime(day)};{h.strftime(clock)};{i % 24 + np.sin(i):.3f}\n"
                   for i, h in enumerate(hours) if i != 7)  # One hour missing: a gap.
    found = _read(tmp_path, "Date;Time;v\n" + rows + ";;\n;;\n", date_column="Date")
    assert found.frequency == "h" and list(found.dates) == list(hours)
    assert found.added_timestamps == 1  # Filled halfway:
    assert found.values[7] == pytest.approx((found.values[6] + found.values[8]) / 2)
    assert any("'Date' holds days and 'Time' times of day" in note for note in found.notes)
    assert any("Dropped 2 rows without any value" in note for note in found.notes)
    # 09/03/2024 to 11/03/2024 read either way; day first gives hours, month first months.
    assert any("read day first" in note for note in found.notes) == day.startswith("%d")
    numbers = "".join(f"{h:%d.%m.%Y},{h:%H}.{h:%M},{i}\n" for i, h in enumerate(hours))
    found = _read(tmp_path, "Date,Time,v\n" + numbers, date_column="Date")  # 18.00: a number.
    assert list(found.dates) == list(hours)
    daily = "".join(f"2024-01-{d:02d},0{d % 9}:30,{d}\n" for d in range(1, 20))
    found = _read(tmp_path, "d,taken at,v\n" + daily)  # Days that do not repeat: days.
    assert found.frequency == "D" and found.dates[0] == pd.Timestamp("2024-01-01")


def test_a_series_of_minutes_resampled_to_hours(tmp_path):
    minutes = pd.date_range("2024-01-01 17:24", "2024-01-03 09:50", freq="min")
    rows = "".join(f"{m:%Y-%m-%d %H:%M},{1 + (m.hour >= 8)}\n" for m in minutes)
    found = _read(tmp_path, "d,v\n" + rows)
    hours = series.resampled(found, "h", "sum")
    # 17:00 and 09:00 are covered in part: left out. 60 minutes of 1 or 2 in the others.
    assert hours.dates[0] == pd.Timestamp("2024-01-01 18:00") and hours.frequency == "h"
    assert hours.dates[-1] == pd.Timestamp("2024-01-03 08:00") and len(hours.dates) == 39
    assert set(hours.values) == {60.0, 120.0}
    assert "to 39 periods of h (the sum of each; --set resample); left out 2 first or last " \
           "periods the data covers in part." in hours.notes[-1]
    assert set(series.resampled(found, "h", "max").values) == {1.0, 2.0}
    # Sales as they happen: irregular. A day without one sums to 0, and no day is cut.
    sales = _read(tmp_path, "d,v\n2024-03-01 10:00,5\n2024-03-01 17:30,2\n2024-03-03 09:10,4\n"
                  "2024-03-04 12:00,1\n2024-03-04 12:05,1\n")
    daily = series.resampled(sales, "D", "sum")
    assert daily.values.tolist() == [7, 0, 4, 2] and daily.dates[0] == pd.Timestamp("2024-03-01")
    days = pd.date_range("2024-02-01", "2024-07-31", freq="D")  # February is whole, if short.
    months = series.resampled(series.Series(np.ones(len(days)), days, "v", "x", frequency="D"),
                              "MS", "sum")
    assert months.values.tolist() == [29, 31, 30, 31, 30, 31]
    for rule, how, words in [("30s", "mean", "finer than the series' steps .min."),
                             ("fortnight", "mean", "not a pandas frequency"),
                             ("h", "median", "aggregate must be one of")]:
        with pytest.raises(DlrefError, match=words):
            series.resampled(found, rule, how)


def test_a_resampled_run_reads_new_files_the_same_way(tmp_path, runs_root):
    minutes = pd.date_range("2024-01-01", periods=60 * 24 * 5, freq="min")
    rows = [[f"{m:%d/%m/%Y}", f"{m:%H:%M:%S}", f"{10 + np.sin(m.hour / 3.8) + m.minute / 600:.3f}"]
            for m in minutes]
    data = helpers.write_csv(tmp_path / "power.txt", ["Date", "Time", "sales"], rows, ";")
    result = helpers.invoke("train", "timeseries", "--data", data, "--target", "sales",
                            "--date-column", "Date", "--epochs", 1, "--set", "window=5",
                            "--set", "resample=h")
    helpers.assert_ok(result)
    assert "Resampled: 7,200 values to 120 periods of h" in result.output
    recent = helpers.write_csv(tmp_path / "recent.txt", ["Date", "Time", "sales"],
                               rows[-60 * 8 - 30:], ";")
    result = helpers.invoke("predict", helpers.only_run(runs_root, "timeseries"), "--data",
                            recent, "--horizon", 2, "--output", "-")
    helpers.assert_ok(result)  # The half hour at the start is left out.
    assert result.stdout.splitlines()[1].startswith("2024-01-06 00:00:00,")
    assert "left out 1 first or last period" in result.stderr


def test_words_and_excel_errors_for_no_value_are_gaps(tmp_path):
    values = [str(v) for v in range(1, 13)]
    values[3], values[7] = "#DIV/0!", "missing"  # A sheet saved as CSV; a typed note.
    rows = "".join(f"2024-01-{d + 1:02d},{v}\n" for d, v in enumerate(values))
    found = _read(tmp_path, "d,v\n" + rows)
    assert found.values[3] == 4 and found.values[7] == 8  # Interpolated.
    assert any("2 gaps" in note for note in found.notes)


def test_hours_across_the_end_of_daylight_saving_time(tmp_path):
    hours = pd.date_range("2021-10-30", "2021-11-01", freq="h", tz="Europe/Berlin")
    rows = "".join(f"{h.isoformat()},{i % 24 + np.sin(i):.3f}\n" for i, h in enumerate(hours))
    found = _read(tmp_path, "d,v\n" + rows)  # With offsets: 50 distinct instants, as UTC.
    assert found.frequency == "h" and len(found.dates) == len(hours) == 50  # 25 on the 31st.
    assert found.dates[0] == pd.Timestamp("2021-10-29 22:00")
    assert any("+01:00, +02:00" in note and "read as UTC" in note for note in found.notes)
    local = "".join(f"{h.strftime('%Y-%m-%d %H:%M')},{i}\n" for i, h in enumerate(hours))
    with pytest.raises(DlrefError, match="share a timestamp .2021-10-31 02:00:00.*daylight"):
        _read(tmp_path, "d,v\n" + local)  # Clock times: 02:00 twice, with the likely cause.
    days = pd.date_range("2021-03-20", "2021-04-10", freq="D", tz="Europe/Berlin")
    found = _read(tmp_path, "d,v\n" + "".join(f"{d.isoformat()},{i}\n"
                                              for i, d in enumerate(days)))
    assert found.frequency == "D" and found.dates[0] == pd.Timestamp("2021-03-20")  # Wall time.


def test_several_series_in_one_table_are_refused_with_the_column_that_parts_them(tmp_path):
    rows = "".join(f"2024-01-0{day},{station},{day * k}\n" for day in range(1, 6)
                   for k, station in enumerate(["north", "south"], 1))
    with pytest.raises(DlrefError) as error:
        _read(tmp_path, "d,station,v\n" + rows)
    assert "10 rows share a timestamp" in str(error.value)
    assert "Column 'station' tells them apart (north, south)" in str(error.value)


@pytest.mark.parametrize("text, target, date_column, words", [
    ("d,v\n1,5\n2,6\n3,7\n", "v", "d", ["plain numbers", "Without --date-column"]),
    ("d,v\n2024-01-01,5\n,6\n", "v", "d", ["no date in 1 row", "file lines 3"]),
    ("d,v\n2024-01-01,5\n", "v", "v", ["both name 'v'"]),
])
def test_date_columns_that_are_not_dates_are_refused(text, target, date_column, words,
                                                     tmp_path):
    with pytest.raises(DlrefError) as error:
        _read(tmp_path, text, target, date_column)
    for word in words:
        assert word in str(error.value)


def test_a_total_row_below_the_series_is_left_out(tmp_path):
    rows = "".join(f"2024-0{m}-01,{m * 10}\n" for m in range(1, 10))
    found = _read(tmp_path, "d,v\n" + rows + "Total,450\nAverage,50\n")
    assert len(found.values) == 9 and found.values[-1] == 90 and found.frequency == "MS"
    assert any("Left out 2 rows at the end named as a summary in 'd' ('Total', 'Average')"
               in note for note in found.notes)
    with pytest.raises(DlrefError, match="dates pandas cannot read in 1 row .file lines 3"):
        _read(tmp_path, "d,v\n2024-01-01,1\nTotal,2\n" + rows)  # Not at the end: refused.


def test_rows_after_the_last_value_are_left_out_not_filled(tmp_path):
    found = _read(tmp_path, "d,v\n2024-01-01,1\n2024-01-02,2\n2024-01-03,\n2024-01-04,\n")
    assert list(found.values) == [1.0, 2.0] and found.dates[-1] == pd.Timestamp("2024-01-02")
    assert any("Left out 2 rows without a value" in note for note in found.notes)


def test_a_constant_series_is_refused_and_hourly_starts_show_the_time(tmp_path):
    with pytest.raises(DlrefError, match="same value in every row"):
        _read(tmp_path, "d,v\n2024-01-01,5\n2024-01-02,5\n2024-01-03,5\n")
    hours = pd.date_range("2024-01-01", periods=60, freq="h")
    rows = "".join(f"{h.isoformat()},{np.sin(i / 3):.4f}\n" for i, h in enumerate(hours))
    data = series.prepare(_read(tmp_path, "d,v\n" + rows), 5, 0.15, 0.15)
    assert data.meta["test_start"] == "2024-01-03 04:00:00" and data.meta["season"] == 24


# --- The stateful variant ------------------------------------------------------------------------
# 120 days, window 5: 80 training, 17 validation and 17 test windows. In batches of 12 the oldest
# 8 training and 5 validation windows go.


# Keras' stateful LSTMs carry no state on JAX, so the recipe refuses stateful=true there.
tensorflow_only = pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax",
                                     reason="stateful=true runs on TensorFlow only")


def _stateful_data(tmp_path, batch_size=12):
    from dlref.recipes import timeseries

    config = timeseries.Config(window=5, lstm_units=(8,), stateful=True, batch_size=batch_size)
    source = Source(data=str(_daily(tmp_path / "s.csv")), target="sales", date_column="day")
    return config, timeseries.load_data(config, source)


def test_stateful_batches_keep_the_most_recent_windows(tmp_path):
    found = series.read(Source(data=str(_daily(tmp_path / "s.csv")), target="sales",
                               date_column="day"))
    data = series.prepare(found, 5, 0.15, 0.15)
    trimmed = series.trim_to_batches(data, 12)
    assert np.array_equal(trimmed.train[0], data.train[0][8:])
    assert np.array_equal(trimmed.val[1], data.val[1][5:])
    assert np.array_equal(trimmed.test[0], data.test[0])  # The stateless copy takes any batch.
    steps = trimmed.extra["steps"]
    assert np.array_equal(steps["train"], data.extra["steps"]["train"][8:])
    for split in ("train", "val"):  # Each split keeps its most recent windows.
        assert steps[split][-1] == data.extra["steps"][split][-1]
    assert "left out the oldest 8 training windows and 5 validation windows" in trimmed.notes[-1]
    assert trimmed.fingerprint != data.fingerprint and len(data.train[1]) == 80


@tensorflow_only
def test_stateful_training_keeps_time_order_and_one_batch_size(tmp_path):
    from dlref import training
    from dlref.recipes import timeseries

    config, data = _stateful_data(tmp_path)
    assert training.fit_options(timeseries, config) == {"shuffle": False,
                                                        "validation_batch_size": 12}
    assert training.fit_options(timeseries, timeseries.Config())["shuffle"] is True
    shuffle = training.fit_options(timeseries, config)["shuffle"]
    batches, steps = training.epoch_batches(data.train, 12, 42, 0, 1, shuffle=shuffle)
    seen = np.concatenate([np.asarray(y) for _, y in itertools.islice(iter(batches), steps)])
    assert steps == 6 and np.array_equal(seen, data.train[1])


@tensorflow_only
def test_states_start_at_zero_each_epoch_and_validation_scores_the_saved_model(tmp_path):
    """Through the tuner's HyperModel, which fits with the recipe's fit options and callbacks."""
    import keras
    import keras_tuner

    from dlref.recipes import timeseries
    from dlref.tuning.engine import RecipeHyperModel

    def carried():
        return sum(float(np.abs(state.numpy()).sum()) for layer in model.layers
                   if getattr(layer, "stateful", False) for state in layer.states)

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen = []

        def on_train_batch_begin(self, batch, logs=None):
            self.seen.append((batch, carried()))

    config, data = _stateful_data(tmp_path)
    hp = keras_tuner.HyperParameters()
    hypermodel = RecipeHyperModel(timeseries, config, data)
    model, probe = hypermodel.build(hp), Probe()
    assert "batch_size" not in hp.values  # Part of the model and the trimmed data: not tuned.
    history = hypermodel.fit(hp, model, epochs=2, callbacks=[probe], verbose=0)
    # Every epoch starts from zero states, and within an epoch they are carried.
    assert [size for batch, size in probe.seen if batch == 0] == [0.0, 0.0]
    assert all(size > 0 for batch, size in probe.seen if batch > 0)
    stateless = timeseries.final_model(model, config, data)
    assert not any(getattr(layer, "stateful", False) for layer in stateless.layers)
    loss = stateless.evaluate(*data.val, batch_size=5, verbose=0)[0]
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-4)


@tensorflow_only
def test_stateful_run_saves_a_model_for_any_batch_size(tmp_path, runs_root):
    from dlref import saved
    from dlref.recipes import timeseries

    path = _daily(tmp_path / "s.csv")
    result = _train(path, "--set", "stateful=true", "--set", "batch_size=12", "--name", "kept")
    helpers.assert_ok(result)
    assert "left out the oldest 8 training windows and 5 validation windows" in result.output
    assert "the window 12 steps earlier, which ended 7 steps before it starts" in result.output
    run_dir = helpers.only_run(runs_root, "timeseries")
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["data"]["rows"] == {"train": 72, "val": 12, "test": 17}
    # The data rebuilt as trained, trimming included (evaluate and --resume rebuild it so).
    data = timeseries.load_data(timeseries.Config(**manifest["config"]),
                                Source.from_dict(manifest["source"]))
    assert data.fingerprint == manifest["data"]["fingerprint"]
    model = saved.load_model(run_dir / "model.keras")  # Keras safe mode.
    assert model.input_shape == (None, 5, 1)
    assert not any(getattr(layer, "stateful", False) for layer in model.layers)
    one, every = model.predict(data.test[0][:1], verbose=0), model.predict(data.test[0], verbose=0)
    assert every.shape == (17, 1) and one[0, 0] == pytest.approx(every[0, 0], abs=1e-5)
    # A forecast fed back in, one row at a time.
    helpers.assert_ok(helpers.invoke("predict", "kept", "--data", path, "--horizon", 2))


@tensorflow_only
def test_a_series_too_short_for_one_stateful_batch_is_refused(tmp_path, runs_root):
    result = _train(_daily(tmp_path / "s.csv"), "--set", "stateful=True", "--set",
                    "batch_size=20")
    helpers.assert_user_error(result, "whole batches of 20 windows", "17 validation windows",
                              "at most 17")
    assert helpers.run_folders(runs_root) == []


@tensorflow_only
@pytest.mark.slow
def test_a_resumed_stateful_run_repeats_the_uninterrupted_one(tmp_path, runs_root, monkeypatch):
    """SIGTERM in epoch 2, then --resume: every epoch starts from zero states and the windows in
    the same order, so the resumed epoch repeats the uninterrupted run's."""
    import os
    import signal

    import keras

    from dlref.recipes import timeseries
    from dlref.resumable import read_history

    path = _daily(tmp_path / "s.csv")
    settings = ["--set", "stateful=True", "--set", "batch_size=12", "--set", "dropout_rate=0.2",
                "--set", "early_stopping_patience=0"]
    helpers.assert_ok(_train(path, *settings, "--name", "whole", epochs=3))

    class Terminate(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # dlref's handler stops training at the end of this epoch.
                os.kill(os.getpid(), signal.SIGTERM)

    own = timeseries.callbacks
    monkeypatch.setattr(timeseries, "callbacks", lambda *args: own(*args) + [Terminate()])
    assert _train(path, *settings, "--name", "cut", epochs=3).exit_code == 130
    monkeypatch.setattr(timeseries, "callbacks", own)
    result = helpers.invoke("train", "--resume", "cut")
    helpers.assert_ok(result)
    assert "after epoch 2 of 3" in result.output
    folders = {folder.name.rsplit("-", 1)[1]: folder for folder in helpers.run_folders(runs_root)}
    whole, cut = (read_history(folders[name] / "history.csv") for name in ("whole", "cut"))
    assert [row["epoch"] for row in cut] == [0, 1, 2]
    for ours, theirs in zip(cut, whole, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
