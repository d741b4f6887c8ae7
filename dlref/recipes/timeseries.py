"""Time series forecasting with stacked LSTMs (chapter 9).

The book's pipeline: difference the series, scale the changes to [-1, 1] with the training
period's range only, feed the last 10 changes to LSTM(100) -> LSTM(100) -> Dense(1), and undo
the scaling and the differencing to get a forecast in the series' own units. The split is by
time (train, validation, test, in that order), and every forecast is one step ahead from actual
history, for the network and for the three baselines a forecaster tries first: persistence
(the next value is the last one), seasonal naive (the value one season ago) and a seasonal
ARIMA from statsmodels fitted on the period before the test.

Built-in data: the Mauna Loa CO2 record (statsmodels), monthly means 1958-2001. Measured with
the defaults (seed 42): test MAE 0.32 ppm over the last 77 months, against 1.13 for persistence,
1.68 for seasonal naive and 0.24 for the seasonal ARIMA; early stopping ends it after 32 epochs
(about 15 s here). On yearly sunspots (`--set season=11`) it beats the ARIMA: MAE 13.1 vs 17.4.

The book's stateful variant (`--set stateful=true`, or the preset timeseries-stateful): each LSTM
starts row i of a batch from the state row i of the batch before ended with. The book says the
memory is then reset every epoch; Keras (3.15) does not do that by itself, and the book's script
(batch 100, stateful) neither reset the states nor turned shuffling off. Here the batch size is
fixed in the model (the default 32: a batch of 100 would leave CO2's 77 validation windows none),
the windows stay in time order, the training and validation windows are cut to whole batches (the
oldest go), and the states are zeroed at each epoch's start. Validation starts every batch from
zero states, which is what the saved model does: a stateless copy holding the trained weights, so
evaluate, predict --horizon and the saved model.keras take any batch size. Measured on CO2
(seed 42, one run after the other on 2 CPU cores): test MAE 0.35 ppm, early stopping after
78 epochs (69 s of epochs), against 0.32 after 32 epochs (27 s) for the stateless default; the
baselines are unchanged (persistence 1.13, seasonal naive 1.68, ARIMA 0.24). With batch_size 10,
the window, each row continues its row of the batch before end to end, and the network leans on
that memory, which the stateless copy has not got: MAE 0.53, stopped after 11 epochs.
"""

import dataclasses
import warnings

import keras
import numpy as np
from keras import layers

from dlref import metrics
from dlref.data import series as serieslib
from dlref.errors import DlrefError
from dlref.recipes import common
from dlref.text import plural

NAME = "timeseries"
CHAPTER = 9
SUMMARY = "LSTM one-step forecasts beside persistence, seasonal naive, ARIMA (built-in: CO2)"
MONITOR = "val_loss"
MODE = "min"
# Keras backend unless --backend or KERAS_BACKEND says otherwise (README, "Keras backends"):
# JAX runs the stateless LSTM's epochs 3.7x faster on the built-in series (0.19 s against
# 0.72 s), but its stateful LSTMs carry no state (check_config refuses them there) and its
# evaluation took 7.7 s longer; TensorFlow runs both variants, so the book's stateful one
# needs no flag. --backend jax for long stateless runs.
BACKEND = "tensorflow"
BASELINES = ("persistence = last value; seasonal_naive = one season ago; "
             "classical = seasonal ARIMA (statsmodels)")

# --- Config ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    lstm_units: tuple = (100, 100)  # the book's two stacked LSTM layers
    window: int = 10  # the book's lag: changes fed to the network for each forecast
    dropout_rate: float = 0.0  # dropout on each LSTM's inputs (0 = none)
    optimizer: str = "adam"  # adam, adamw, rmsprop, sgd, adadelta, nadam
    learning_rate: float = 0.001  # the optimizer's step size
    batch_size: int = 32  # windows per step
    epochs: int = 100  # upper bound; early stopping on val_loss usually ends sooner
    early_stopping_patience: int = 10  # epochs without val_loss improvement (0 = off)
    season: int = 0  # steps per season for seasonal naive and ARIMA (0 = from the frequency)
    val_fraction: float = 0.15  # share of windows, after the training period, for validation
    test_fraction: float = 0.15  # share of windows, at the end, for the test period
    test_start: str = ""  # or a date (YYYY-MM-DD) where the test period starts
    resample: str = ""  # or a period (h, D, W, MS, ...): one value per period, then forecast
    aggregate: str = "mean"  # with resample: mean, sum (counts, sales), last, max or min
    stateful: bool = False  # the book's stateful LSTMs: states kept batch to batch, reset per epoch
    seed: int = 42  # seeds the weights and the order of the windows


def check_config(config):
    """Rejects settings no network could train with, naming the key and the valid range."""
    if not config.lstm_units or any(int(u) < 1 for u in config.lstm_units):
        raise DlrefError(f"lstm_units must be positive layer widths, got {config.lstm_units}.")
    if config.window < 1 or config.season < 0:
        raise DlrefError("window must be at least 1 and season at least 0.")
    common.check_fractions(config)
    common.check_training(config)
    if config.stateful and keras.backend.backend() == "jax":
        raise DlrefError("stateful=true needs --backend tensorflow: on JAX, Keras' stateful "
                         "LSTMs carry no state from one batch to the next (their states were "
                         "still zero after training, checked with Keras 3.15).")


# --- Data ------------------------------------------------------------------------------------


def load_data(config, source):
    check_config(config)
    found = serieslib.read(source)
    if config.resample:
        found = serieslib.resampled(found, config.resample, config.aggregate)
    data = serieslib.prepare(found, config.window, config.val_fraction, config.test_fraction,
                             config.season, config.test_start)
    data.meta.update(date_column=source.date_column, resample=config.resample,
                     aggregate=config.aggregate)
    if config.stateful:
        data = serieslib.trim_to_batches(data, config.batch_size)
        data.notes.append(_carried_state_note(config))
    return data


def _carried_state_note(config):
    """What a row's carried state comes from: row i of batch k+1 is the window batch_size steps
    after row i of batch k, so the two meet end to end only when batch_size equals the window."""
    gap = config.batch_size - config.window
    where = ("which ends where it starts" if gap == 0 else
             f"which ended {plural(gap, 'step')} before it starts" if gap > 0 else
             f"which overlaps it by {plural(-gap, 'step')}")
    return (f"Stateful: each row of a batch starts from the state its row of the batch before "
            f"left: the window {config.batch_size} steps earlier, {where}.")


# --- Model -----------------------------------------------------------------------------------


def build_model(config, data):
    # A stateful LSTM holds one state per row of its batch, so the batch size is in the model.
    batch_size = config.batch_size if config.stateful else None
    inputs = keras.Input(shape=(config.window, 1), batch_size=batch_size, name="changes")
    x = inputs
    for index, units in enumerate(config.lstm_units):
        last = index == len(config.lstm_units) - 1
        x = layers.LSTM(int(units), return_sequences=not last, dropout=config.dropout_rate,
                        stateful=config.stateful, name=f"lstm_{index + 1}")(x)
    outputs = layers.Dense(1, name="next_change")(x)
    model = keras.Model(inputs, outputs, name="lstm_forecast")
    model.compile(optimizer=common.make_optimizer(config), loss="mean_squared_error",
                  metrics=["mae"])
    return model


# --- Stateful training -----------------------------------------------------------------------


def fit_options(config):
    """Stateful: the windows in time order, and validation in batches of the model's size."""
    if not config.stateful:
        return {}
    return {"shuffle": False, "validation_batch_size": config.batch_size}


class ResetStates(keras.callbacks.Callback):
    """Zeroes the stateful LSTMs' states at the start of every epoch and of every validation
    batch (one batch per step: steps_per_execution must stay 1).

    Keras 3.15 never does it itself: fit carries the states from batch to batch, from training
    into validation and on into the next epoch, and keras.Model has no reset_states() any more,
    only each RNN layer's reset_state().
    """

    def on_epoch_begin(self, epoch, logs=None):
        # The book's reset every epoch: each epoch starts from zero states, as the first did, so
        # a resumed epoch starts as it would have (the backup holds no states).
        _reset_states(self.model)

    def on_test_batch_begin(self, batch, logs=None):
        # Validation from zero states, batch by batch, is the stateless copy that is saved and
        # evaluated (final_model), so val_loss, which picks the best checkpoint and stops
        # training, scores the model the run delivers. States carried in from training would
        # score a network forecasting from memory of the whole training period, which the saved
        # model has not got.
        _reset_states(self.model)


def _reset_states(model):
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def callbacks(config, data, run_dir):
    return [ResetStates()] if config.stateful else []


def final_model(model, config, data):
    """The model to evaluate and save: a stateful network's layers rebuilt without state (any
    batch size; each forecast from its window alone, as validation scored it) with its weights."""
    if not config.stateful:
        return model
    stateless = build_model(dataclasses.replace(config, stateful=False), data)
    stateless.set_weights(model.get_weights())
    if model.optimizer is not None and model.optimizer.built:
        # The optimizer's state too, as a stateless run saves it: a model.keras whose optimizer
        # was never built makes Keras warn on every load that it skipped the saved variables.
        variables = {}
        model.optimizer.save_own_variables(variables)
        stateless.optimizer.build(stateless.trainable_variables)
        stateless.optimizer.load_own_variables(variables)
    return stateless


# --- Search space ----------------------------------------------------------------------------


def search_space(hp, config):
    widths = sorted({32, 64, 100, 128, int(config.lstm_units[0])})
    units = hp.Choice("lstm_units", widths, default=int(config.lstm_units[0]))
    depth = hp.Int("depth", 1, 2, default=len(config.lstm_units))
    # A stateful network's batch size is in the model and in the trimmed data: it stays as set.
    batch_size = (config.batch_size if config.stateful else
                  hp.Choice("batch_size", [16, 32, 64], default=config.batch_size))
    return dataclasses.replace(
        config, lstm_units=(units,) * depth,
        dropout_rate=hp.Float("dropout_rate", 0.0, 0.5, step=0.1, default=config.dropout_rate),
        learning_rate=hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                               default=config.learning_rate),
        batch_size=batch_size)


# --- Evaluation ------------------------------------------------------------------------------


def loss_label(meta):
    return f"MSE (scaled change of {meta['target']})"


def forecasts(model, data, split="test"):
    """{predictor: one-step-ahead forecasts} and the actual values of a split (kept in
    data.extra, so the plot reuses the evaluation's ARIMA fit)."""
    if ("forecasts", split) in data.extra:
        return data.extra[("forecasts", split)]
    values, steps = data.extra["values"], data.extra["steps"][split]
    x = getattr(data, split)[0]
    previous = values[steps]  # Level index = change index + 1; the last known is `steps`.
    change = serieslib.unscale(model.predict(x, verbose=0, batch_size=1024).reshape(-1), data.meta)
    found = {"model": previous + change, "persistence": previous}
    season = data.meta["season"]
    if season > 1 and steps[0] + 1 - season >= 0:
        found["seasonal_naive"] = values[steps + 1 - season]
    classical = _arima(values, steps, season) if data.extra.get("fit_classical", True) else None
    if classical is not None:
        found["classical"] = classical
    data.extra[("forecasts", split)] = found, values[steps + 1]
    return data.extra[("forecasts", split)]


def _arima(values, steps, season):
    """One-step-ahead forecasts of a (seasonal) ARIMA fitted on the values before `steps`."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    seasonal = (0, 1, 1, season) if 1 < season <= 24 else (0, 0, 0, 0)
    # The last 2,000 values at most: a long hourly series would take minutes to fit.
    history = values[max(0, steps[0] + 1 - 2000):steps[0] + 1]
    if len(history) < 3 * max(season, 4):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Convergence chatter; the scores say how it did.
        fitted = SARIMAX(history, order=(1, 1, 1), seasonal_order=seasonal).fit(disp=False)
        whole = fitted.apply(values[:steps[-1] + 2])
        return whole.get_prediction(start=steps[0] + 1, end=steps[-1] + 1).predicted_mean


def evaluate(model, data):
    found, actual = forecasts(model, data)
    table = {}
    for predictor, predicted in found.items():
        for metric, value in metrics.forecast_errors(actual, predicted).items():
            table.setdefault(metric, {})[predictor] = value
    steps, dates = data.extra["steps"]["test"], data.extra["dates"]
    start = serieslib.moment_text(dates, steps[0] + 1)
    shown = ", ".join(name.replace("_", " ") for name in found if name != "model")
    report = (f"One-step-ahead forecasts of {data.meta['target']} over {len(actual):,} test "
              f"steps from {start}, beside {shown}; season {data.meta['season']}; mape in %.")
    return {"metrics": table, "report": report}


def plots(model, data):
    from dlref import reports

    found, actual = forecasts(model, data)
    dates = data.extra["dates"]
    steps = data.extra["steps"]["test"]
    when = dates[steps + 1] if dates is not None else steps + 1
    return {"forecast": reports.forecast(when, actual, found, data.meta["target"])}


# --- New data: evaluate --data and predict -----------------------------------------------------


def _read_like_training(path, meta):
    """The series of a new file, read as in training; what was done to it goes to stderr."""
    import sys

    from dlref.data import Source

    found = serieslib.read(Source(data=str(path), target=meta["target"],
                                  date_column=meta.get("date_column")),
                           dayfirst=meta.get("dayfirst"))
    if meta.get("resample"):
        found = serieslib.resampled(found, meta["resample"], meta.get("aggregate", "mean"))
    for note in found.notes[1:]:  # The first says which file: the user just named it.
        print(note, file=sys.stderr)
    trained = meta.get("frequency")
    if found.frequency and trained and found.frequency != trained:
        print(f"Warning: {path} has frequency {found.frequency}, and the run was trained on "
              f"{trained} data: its forecasts assume {trained} steps.", file=sys.stderr)
    return found


def load_labelled(path, meta):
    """Every forecastable step of another file, with the run's scaler and window."""
    found = _read_like_training(path, meta)
    window = meta["window"]
    # From the first step every predictor can forecast (seasonal naive looks a season back).
    first = max(window, meta["season"] - 1)
    if len(found.values) < first + 2:
        raise DlrefError(f"{path}: {len(found.values)} values, and the first forecast that "
                         f"every predictor can make needs {first + 1} before it.")
    changes = serieslib.scale(np.diff(found.values), meta["scaler"]["low"],
                               meta["scaler"]["high"])
    steps = np.arange(first, len(changes))
    x, y = serieslib.windows(changes, steps, window)
    extra = {"values": found.values, "dates": found.dates, "steps": {"test": steps},
             "fit_classical": False}
    from dlref.data import Dataset

    return Dataset(train=(x[:0], y[:0]), val=(x[:0], y[:0]), test=(x, y), meta=dict(meta),
                   extra=extra)


def predict(model, meta, path, horizon=1):
    """The next `horizon` values after the file's last one, each fed back in (recursive)."""
    import pandas as pd

    if horizon < 1:
        raise DlrefError(f"--horizon must be at least 1, got {horizon}.")
    if horizon > 100 * meta["window"]:
        raise DlrefError(f"--horizon {horizon} is over 100 windows ahead: each step feeds the "
                         "last forecast back in, so errors compound long before that.")
    found = _read_like_training(path, meta)
    window = meta["window"]
    if len(found.values) < window + 1:
        raise DlrefError(f"{path}: {len(found.values)} values; a forecast needs the last "
                         f"{window + 1}.")
    scaled = list(serieslib.scale(np.diff(found.values[-(window + 1):]),
                                   meta["scaler"]["low"], meta["scaler"]["high"]))
    level, out = float(found.values[-1]), []
    for _ in range(horizon):
        step = model.predict(np.asarray(scaled[-window:], "float32")[None, :, None], verbose=0)
        scaled.append(float(step.reshape(-1)[0]))
        level += float(serieslib.unscale(scaled[-1], meta))
        out.append(level)
    frame = pd.DataFrame({f"forecast_{meta['target']}": out})
    frequency = found.frequency or meta.get("frequency")
    if found.dates is not None and frequency:
        frame.insert(0, meta.get("date_column") or "date",
                     pd.date_range(found.dates[-1], periods=horizon + 1, freq=frequency)[1:])
    else:
        frame.insert(0, "steps_ahead", np.arange(1, horizon + 1))
    return frame
