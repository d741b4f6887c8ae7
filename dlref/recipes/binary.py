"""Binary classification with a deep network, ROC-AUC checkpointing (chapter 4).

The book's network for epileptic seizure detection: five hidden relu layers (128-64-64-32-16)
and a sigmoid output trained on binary cross-entropy. The book's ROC-AUC callback only printed;
here ROC-AUC on the whole validation set is a metric that picks the best checkpoint and shows
in TensorBoard. After training, the decision threshold that maximizes F1 on the validation set
is chosen, and precision, recall and F1 are reported at that threshold beside the ROC curve.

Built-in data: scikit-learn's breast cancer table (569 tumours, 30 features, malignant is the
positive class). Measured with the defaults (seed 42): test ROC-AUC 1.000 and accuracy 1.000
(86 tumours) against 0.5 / 0.628 for a constant predictor and 1.000 / 0.977 for
HistGradientBoosting.
"""

import dataclasses

import keras
import numpy as np
from keras import layers

from dlref.data import tabular
from dlref.recipes import common

NAME = "binary"
CHAPTER = 4
SUMMARY = "Deep binary classifier, checkpoint on ROC-AUC (built-in: breast cancer)"
MONITOR = "val_roc_auc"
MODE = "max"
# Keras backends unless --backend or KERAS_BACKEND says otherwise (measured here: README,
# "Keras backends"): JAX trains this dense network 2-4x faster; a search builds dozens of
# small models, and JAX's compile per model makes it slower there than TensorFlow.
BACKEND = "jax"
TUNE_BACKEND = "tensorflow"
# On JAX, train up to 32 batches per compiled call (dlref.fused): dense steps are short enough
# that Python's time between them counts (see that module for the figures).
FUSED_STEPS = True

# --- Config ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    hidden_units: tuple = (128, 64, 64, 32, 16)  # the book's five hidden layers
    activation: str = "relu"  # hidden layer activation
    kernel_initializer: str = "glorot_uniform"  # hidden kernel initializer
    bias_initializer: str = "zeros"  # hidden bias initializer
    dropout_rate: float = 0.0  # dropout after each hidden layer (0 = none)
    l2: float = 0.0  # L2 weight penalty on hidden kernels (0 = none)
    optimizer: str = "adam"  # adam, adamw, rmsprop, sgd, adadelta, nadam
    learning_rate: float = 0.001  # the optimizer's step size
    batch_size: int = 32  # the book's batch size
    epochs: int = 50  # upper bound; early stopping on val_roc_auc usually ends sooner
    early_stopping_patience: int = 10  # epochs without val_roc_auc improvement (0 = off)
    tune_threshold: bool = True  # pick the F1-best threshold on validation (else 0.5)
    val_fraction: float = 0.15  # share of rows for validation (checkpoint choice)
    test_fraction: float = 0.15  # share of rows held out for the final test metrics
    seed: int = 42  # seeds the split, the weights and the shuffling


# --- Data ------------------------------------------------------------------------------------


def load_data(config, source):
    return tabular.load(source, "binary", "breast_cancer", config.seed,
                        config.val_fraction, config.test_fraction)


# --- Model -----------------------------------------------------------------------------------


def build_model(config, data):
    common.check_dense_config(config)
    inputs = keras.Input(shape=(data.train[0].shape[1],), name="features")
    x = common.dense_stack(inputs, config)
    outputs = layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inputs, outputs, name="mlp_binary")
    model.compile(optimizer=common.make_optimizer(config), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


# --- Search space ----------------------------------------------------------------------------


def search_space(hp, config):
    return dataclasses.replace(config, hidden_units=common.search_layers(hp, config),
                               **common.search_training(hp, config))


# --- Evaluation ------------------------------------------------------------------------------


def calibrate(model, data, config):
    """The decision threshold: F1-best on the validation split, or 0.5."""
    if not config.tune_threshold:
        return {"threshold": 0.5}
    x_val, y_val = data.val
    probability = model.predict(x_val, verbose=0).reshape(-1)
    candidates = np.unique(np.round(probability, 4))
    f1 = [_f1(y_val, probability >= t) for t in candidates]
    return {"threshold": float(candidates[int(np.argmax(f1))]) if len(candidates) else 0.5}


def _f1(y_true, predicted):
    true_positive = np.sum(predicted & (y_true == 1))
    return 2 * true_positive / max(1, np.sum(predicted) + np.sum(y_true == 1))


def score(y_true, outputs, meta):
    from sklearn import metrics

    from dlref.metrics import roc_auc

    probability = np.clip(np.asarray(outputs, dtype="float64").reshape(-1), 1e-7, 1 - 1e-7)
    predicted = probability >= meta.get("threshold", 0.5)
    return {
        "roc_auc": roc_auc(y_true, probability),
        # Average precision: where positives are rare (fraud, faults), what ROC-AUC hides.
        "pr_auc": float(metrics.average_precision_score(y_true, probability))
        if np.any(y_true == 1) else float("nan"),
        "accuracy": float(np.mean(predicted == y_true)),
        "precision": float(metrics.precision_score(y_true, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, predicted, zero_division=0)),
        "log_loss": float(metrics.log_loss(y_true, probability, labels=[0, 1])),
    }


def evaluate(model, data):
    from sklearn import metrics

    x_test, y_test = data.test
    probability = model.predict(x_test, verbose=0).reshape(-1)
    prior = data.meta["trivial"]["prior"][1]
    outputs = {"model": probability, "trivial": np.full(len(y_test), prior)}
    table = common.compare(score, y_test, outputs, data.meta)
    # A constant score ranks nothing: its ROC-AUC is 0.5 by definition, and its average
    # precision the share of positives.
    table["roc_auc"]["trivial"] = 0.5
    table["pr_auc"]["trivial"] = float(np.mean(y_test == 1))
    # For accuracy the trivial model says the majority class; for precision, recall and F1 it
    # says "positive" for every row, the baseline that F1 is usually compared with.
    majority = data.meta["trivial"]["majority"]
    table["accuracy"]["trivial"] = float(np.mean(y_test == majority))
    always = score(y_test, np.ones(len(y_test)), {"threshold": 0.5})
    for name in ("precision", "recall", "f1"):
        table[name]["trivial"] = always[name]
    threshold = data.meta.get("threshold", 0.5)
    report = metrics.classification_report(
        y_test, probability >= threshold, labels=[0, 1], target_names=data.meta["classes"],
        zero_division=0)
    return {"metrics": table, "report": f"threshold {threshold:.4f} "
            f"(positive class: {data.meta['positive_class']})\n{report}"}


def loss_label(meta):
    return "cross-entropy"


def plots(model, data, classical=None):
    """The ROC curve (with the classical baseline's, given its probabilities) and the confusion
    matrix at the chosen threshold."""
    from dlref import reports

    x_test, y_test = data.test
    probability = model.predict(x_test, verbose=0).reshape(-1)
    threshold = data.meta.get("threshold", 0.5)
    return {
        "roc_curve": reports.roc_curve(
            y_test, probability, data.meta["positive_class"], classical=classical,
            classical_name=data.meta.get("classical_name", reports.CLASSICAL)),
        "confusion_matrix": reports.confusion_matrix(
            y_test, (probability >= threshold).astype(int), data.meta["classes"],
            title=f"Confusion matrix (test set)\nat threshold {threshold:.4f}"),
    }


predict = tabular.predict
load_labelled = tabular.load_labelled
check_config = common.check_dense_config
