"""Pieces the tabular recipes share: the dense stack, optimizers, settings checks, and scoring
of the model beside its trivial baseline."""

import keras
from keras import layers, regularizers

from dlref.errors import DlrefError

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
    "adadelta": keras.optimizers.Adadelta,
    "nadam": keras.optimizers.Nadam,
}


def check_dense_config(config):
    """Rejects settings no network could train with, naming the key, value and valid range."""
    if not config.hidden_units or any(int(u) < 1 for u in config.hidden_units):
        raise DlrefError(f"hidden_units must be positive layer widths, got {config.hidden_units}.")
    if not 0 <= config.dropout_rate < 1:
        raise DlrefError(f"dropout_rate must be in [0, 1), got {config.dropout_rate}.")
    if config.l2 < 0:
        raise DlrefError(f"l2 must be >= 0, got {config.l2}.")
    check_training(config)


def check_fractions(config, test_may_be_zero=False):
    """The shares held out for validation and test: each in (0, 1) (test in [0, 1) where a
    given test set may replace it), together below 0.9 so that something is left to train on."""
    lowest = 0 <= config.test_fraction if test_may_be_zero else 0 < config.test_fraction
    if not (0 < config.val_fraction < 1 and lowest and config.test_fraction < 1
            and config.val_fraction + config.test_fraction < 0.9):
        above = "val_fraction above 0" if test_may_be_zero else "both above 0"
        raise DlrefError(f"val_fraction and test_fraction must be below 1, {above}, with a "
                         f"sum below 0.9 (got {config.val_fraction} and "
                         f"{config.test_fraction}).")


def check_training(config):
    """The settings every recipe trained by the shared loop has: step size, batches, epochs."""
    if not 0 <= getattr(config, "dropout_rate", 0) < 1:
        raise DlrefError(f"dropout_rate must be in [0, 1), got {config.dropout_rate}.")
    if config.learning_rate <= 0:
        raise DlrefError(f"learning_rate must be above 0, got {config.learning_rate}.")
    if config.batch_size < 1 or config.epochs < 1:
        raise DlrefError("batch_size and epochs must be at least 1.")
    if config.optimizer not in OPTIMIZERS:
        raise DlrefError(
            f"Unknown optimizer {config.optimizer!r}. Known: {', '.join(OPTIMIZERS)}."
        )


def dense_stack(inputs, config):
    """Dense layers of `config.hidden_units`, each followed by dropout when it is set."""
    x = inputs
    regularizer = regularizers.L2(config.l2) if config.l2 > 0 else None
    for index, units in enumerate(config.hidden_units):
        x = layers.Dense(
            int(units),
            activation=config.activation,
            kernel_initializer=config.kernel_initializer,
            bias_initializer=config.bias_initializer,
            kernel_regularizer=regularizer,
            name=f"hidden_{index + 1}",
        )(x)
        if config.dropout_rate > 0:
            x = layers.Dropout(config.dropout_rate, name=f"dropout_{index + 1}")(x)
    return x


def search_layers(hp, config, max_depth=5):
    """Depth and width of the dense stack as hyperparameters, keeping the book's shape.

    Depth takes the first layers of `config.hidden_units` (repeating the last one to go deeper);
    width scales every layer. At their defaults (depth = its length, scale 1) the result is
    `config.hidden_units` itself, so an empty HyperParameters() rebuilds the Config.
    """
    units = tuple(config.hidden_units)
    depth = hp.Int("depth", 1, max(max_depth, len(units)), default=len(units))
    scale = hp.Choice("width_scale", [0.25, 0.5, 1.0, 2.0], default=1.0)
    units += (units[-1],) * max(0, depth - len(units))
    return tuple(max(4, round(width * scale)) for width in units[:depth])


def search_training(hp, config):
    """The book's chapter 6 hyperparameters (batch size, optimizer, dropout) and learning rate."""
    return {
        "dropout_rate": hp.Float("dropout_rate", 0.0, 0.5, step=0.1, default=config.dropout_rate),
        "optimizer": hp.Choice("optimizer", ["adam", "rmsprop", "adadelta"],
                               default=config.optimizer),
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                                  default=config.learning_rate),
        "batch_size": hp.Choice("batch_size", [16, 32, 64, 128], default=config.batch_size),
    }


def make_optimizer(config):
    return OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate)


def compare(score, y_true, outputs_by_predictor, meta):
    """{metric: {predictor: value}}: every predictor scored with the same function."""
    table = {}
    for predictor, outputs in outputs_by_predictor.items():
        for metric, value in score(y_true, outputs, meta).items():
            table.setdefault(metric, {})[predictor] = value
    return table
