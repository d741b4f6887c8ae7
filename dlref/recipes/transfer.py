"""Transfer learning: a pretrained network's features for a new image task (chapter 8).

The book's two stages in one run. Stage 1 (feature extraction): the base network is frozen and
only a new head learns, GlobalAveragePooling -> Dense(1024, relu) -> softmax, with Adam. Stage
2 (fine-tuning): the top fifth of the base's layers with weights is unfrozen (the book unfreezes
InceptionV3's top two blocks) and the network trains on at a low learning rate, SGD 1e-4 with
momentum 0.9, as the book does. The base runs in inference mode
throughout, so its batch normalization statistics stay those it was pretrained with. Epochs
continue from stage 1 to stage 2 in one history (the `stage` column, and in TensorBoard), and
`--resume` knows which stage it stopped in.

Bases (`--base`): mobilenet_v2 (the default: fast on a CPU), inception_v3 (the book's),
resnet50 and efficientnet_b0 from `keras.applications` with ImageNet weights (`--weights
imagenet`, downloaded once into Keras' cache), random weights (`--weights none`), or any
`.keras` image model (`--weights PATH`), e.g. the model.keras of a dlref `cnn` run: its layers
up to the classifier head become the base, which is the offline way to transfer (train `cnn`
on a large folder, transfer to a small one). Images are resized to the base's input size.

Beside the transferred network, the report shows the same network trained from scratch on the
same images (the `scratch` column), which is what transfer has to beat.

Built-in data shows transfer working offline: the base is the `cnn` network pretrained in the
run on MNIST digits 0-4 (2,500 images, the source task); the target task is digits 5-9 learned
from 20 images per class. Measured with the defaults (seed 42): test accuracy 0.938 on the 2,300
test digits, against 0.579 for the same network trained from scratch on the same 100 images
and 0.200 for the majority class. Stage 1 early-stopped after 7 epochs (best: epoch 2), stage 2
then fine-tuned from that epoch and kept its last, epoch 20; under a minute end to end on 2
cores, pretraining and the scratch baseline included.
"""

import dataclasses
import math

import keras
import numpy as np
from keras import layers

from dlref.data import WEIGHTS_FROM_BACKUP, Dataset, images
from dlref.errors import DlrefError
from dlref.text import plural, shown_path
from dlref.recipes import cnn, common, multiclass

NAME = "transfer"
CHAPTER = 8
SUMMARY = "Pretrained base, frozen then fine-tuned, vs from scratch (built-in: digits 0-4 -> 5-9)"
MONITOR = "val_loss"
MODE = "min"
# Keras backend unless --backend or KERAS_BACKEND says otherwise. Not timed on JAX: its bases
# are convolutions, which ran 1.9-2.2x faster on TensorFlow (oneDNN) in cnn and text.
BACKEND = "tensorflow"
ROC_AUC = True
CLASSICAL_COLUMN = "scratch"
BASELINES = ("trivial = majority class prior; scratch = the same network trained from scratch "
             "on the same images")

# keras.applications constructor, default input size, and how the base wants its pixels:
# "tf" scales 0..255 to -1..1; "caffe" is BGR minus the ImageNet mean; "raw" takes 0..255.
BASES = {
    "mobilenet_v2": ("MobileNetV2", 224, "tf"),
    "inception_v3": ("InceptionV3", 299, "tf"),
    "resnet50": ("ResNet50", 224, "caffe"),
    "efficientnet_b0": ("EfficientNetB0", 224, "raw"),
}
MIN_SIZE = {"inception_v3": 75}  # The others take 32 pixels and more.

# --- Config ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    base: str = "mobilenet_v2"  # mobilenet_v2, inception_v3 (the book's), resnet50, efficientnet_b0
    weights: str = "auto"  # imagenet, none, a .keras file; auto = imagenet (built-in: pretrain)
    image_size: int = 0  # pixels a side; 0 = the base's own (224; inception_v3 299)
    dense_units: int = 1024  # the book's Dense(1024) head
    dropout_rate: float = 0.0  # dropout before the output layer
    feature_epochs: int = 10  # stage 1: epochs with the base frozen
    epochs: int = 20  # stages 1 and 2 together; stage 2 (fine-tuning) is the rest
    optimizer: str = "adam"  # stage 1 optimizer: adam, adamw, rmsprop, sgd, adadelta, nadam
    learning_rate: float = 0.001  # stage 1 step size
    fine_tune_fraction: float = 0.2  # stage 2: the top share of the base's layers unfrozen
    fine_tune_learning_rate: float = 0.0001  # stage 2: the book's SGD 1e-4
    fine_tune_momentum: float = 0.9  # stage 2: the book's momentum
    batch_size: int = 32  # images per step
    early_stopping_patience: int = 5  # per stage: epochs without val_loss improvement (0 = off)
    scratch_baseline: bool = True  # also train the network from scratch for the comparison
    pretrain_epochs: int = 5  # built-in data: epochs of the base on the source task
    per_class: int = 20  # built-in data: target images per class to train on (and to validate)
    val_fraction: float = 0.15  # share of images for validation (checkpoint choice)
    test_fraction: float = 0.15  # share held out for the test metrics
    seed: int = 42  # seeds the split, the weights and the shuffling


def check_config(config):
    """Rejects settings no network could train with, naming the key and the valid values."""
    if config.base not in BASES:
        raise DlrefError(f"base must be one of {', '.join(BASES)}, got {config.base!r}.")
    if config.feature_epochs < 1:
        raise DlrefError(f"feature_epochs must be at least 1, got {config.feature_epochs}: "
                         "stage 1 trains the new head on the frozen base.")
    if not 0 <= config.fine_tune_fraction <= 1:
        raise DlrefError(f"fine_tune_fraction must be in [0, 1], got {config.fine_tune_fraction}.")
    if config.fine_tune_learning_rate <= 0 or config.dense_units < 1:
        raise DlrefError("fine_tune_learning_rate must be above 0 and dense_units at least 1.")
    if not 1 <= config.per_class <= 200:
        raise DlrefError(f"per_class must be from 1 to 200, got {config.per_class}: the built-in "
                         "digits have 500 of each, and at least 100 stay for the test.")
    if config.image_size and config.image_size < MIN_SIZE.get(config.base, 32):
        raise DlrefError(f"{config.base} needs images of at least "
                         f"{MIN_SIZE.get(config.base, 32)} pixels a side (image_size).")
    common.check_fractions(config)
    common.check_training(config)


# --- Data ------------------------------------------------------------------------------------


def load_data(config, source):
    check_config(config)
    weights = _weights(config, source)
    if weights == "builtin":
        return _say_stages(_builtin(config), config)
    if weights not in ("imagenet", "none"):
        model = _read_model(weights)
        height, width, channels = model.input.shape[1:]
        data = images.load(source, config.seed, config.val_fraction, config.test_fraction,
                           size=(height, width), channels=channels)
        colour = ("; it was trained on grayscale images, so these are read as grayscale"
                  if channels == 1 else "")
        data.notes.append(f"Base: {shown_path(weights)} up to its classifier head, at its "
                          f"input size {height}x{width}{colour}.")
    else:
        size = config.image_size or BASES[config.base][1]
        data = images.load(source, config.seed, config.val_fraction, config.test_fraction,
                           size=(size, size), channels=3)
        if weights == "imagenet":
            _application(config, (size, size, 3), "imagenet")  # Downloads now, not mid-run.
        data.notes.append(f"Base: {config.base} with "
                          f"{'ImageNet' if weights == 'imagenet' else 'random'} weights.")
    data.meta["weights"] = weights
    data.extra["config"] = config  # For the scratch baseline (classical_outputs).
    return _say_stages(data, config)


def _say_stages(data, config):
    if config.epochs <= config.feature_epochs:
        data.notes.append(f"epochs {config.epochs} <= feature_epochs {config.feature_epochs}: "
                          "the base stays frozen (no fine-tuning stage).")
    return data


def _weights(config, source):
    """imagenet, none, a model file, or builtin (auto on the built-in data)."""
    if config.weights == "auto":
        return "builtin" if not (source.data or source.dataset) else "imagenet"
    return config.weights


def _builtin(config):
    """Source task: MNIST digits 0-4; target task: digits 5-9, `per_class` of each to train and
    as many to validate, the rest to test."""
    found = images.mnist_5k()
    digits = found.labels.astype(int)
    rng = np.random.default_rng(config.seed)
    source = digits < 5
    train, val, test = [], [], []
    for digit in range(5, 10):
        rows = rng.permutation(np.flatnonzero(digits == digit))
        train += list(rows[:config.per_class])
        val += list(rows[config.per_class:2 * config.per_class])
        test += list(rows[2 * config.per_class:])
    classes = [str(d) for d in range(5, 10)]

    def split(rows):
        rows = np.sort(np.array(rows))
        return found.x[rows], (digits[rows] - 5).astype(np.int32)

    splits = {"train": split(train), "val": split(val), "test": split(test)}
    meta = {"task": "multiclass", "target": "class", "classes": classes,
            "image_shape": [28, 28, 1], "flip_safe": False, "weights": "builtin",
            "source": "digits 5-9, base pretrained on digits 0-4 (built-in)",
            "trivial": {"prior": [0.2] * 5}}
    notes = [f"Built-in transfer task: a cnn base pretrained here on MNIST digits 0-4 "
             f"({int(source.sum()):,} images); target digits 5-9 with "
             f"{len(train)} images to train, {len(val)} to validate, {len(test):,} to test."]
    fingerprint = images.fingerprint(splits, meta)
    return Dataset(splits["train"], splits["val"], splits["test"], meta, fingerprint, notes=notes,
                   extra={"source_task": (found.x[source], digits[source].astype(np.int32)),
                          "config": config})


def _read_model(path):
    from dlref.saved import load_model

    model = load_model(path)
    shape = model.inputs[0].shape if model.inputs else None
    if shape is None or len(shape) != 4 or shape[-1] not in (1, 3) or None in shape[1:3]:
        raise DlrefError(f"{path} does not take images (its input is {shape}); --weights needs "
                         "an image model, such as the model.keras of a cnn run.")
    return model


# --- Model -----------------------------------------------------------------------------------


def build_model(config, data):
    # A resumed run's backup holds every weight: no pretraining (built-in data) or ImageNet
    # download for weights that the backup overwrites at once.
    base = _base(config, data, pretrained=not data.extra.get(WEIGHTS_FROM_BACKUP))
    model = _assemble(base, config, data.meta)
    return enter_stage(model, config, data, 0)


def _base(config, data, pretrained):
    """The base network: its own pixel scaling inside, images in, features out."""
    weights = data.meta["weights"]
    shape = tuple(data.meta["image_shape"])
    if weights == "builtin":
        return _source_network(config, data, pretrained)
    if weights not in ("imagenet", "none"):
        model = _read_model(weights)
        if not pretrained:
            model = keras.models.clone_model(model)  # The same layers, fresh weights.
        return _up_to_head(model)
    network = _application(config, shape, "imagenet" if pretrained and weights == "imagenet"
                           else None)
    inputs = keras.Input(shape=shape, name="pixels")
    x = _scaling(BASES[config.base][2], inputs)
    return keras.Model(inputs, network(x), name="base")


def _application(config, shape, weights):
    constructor = getattr(keras.applications, BASES[config.base][0])
    try:
        return constructor(include_top=False, weights=weights, input_shape=shape)
    except Exception as error:  # Offline: urllib / socket errors land here as Exception.
        if weights != "imagenet":
            raise
        raise DlrefError(
            f"Could not download the ImageNet weights of {config.base} ({type(error).__name__}: "
            f"{str(error)[:200]}). Offline, use --weights PATH (a .keras image model, such as "
            "an earlier cnn run's model.keras), --weights none (random weights), or copy the "
            "weights file into ~/.keras/models/ on a machine with network access.") from None


def _scaling(mode, inputs):
    """The pixel scaling the base was pretrained with, as layers that Keras' safe mode loads."""
    if mode == "tf":
        return layers.Rescaling(1 / 127.5, offset=-1, name="scale_pixels")(inputs)
    if mode == "caffe":
        # RGB -> BGR and minus the ImageNet mean, as one fixed 1x1 linear map per pixel.
        reorder = layers.Dense(3, trainable=False, name="bgr_minus_mean")
        x = reorder(inputs)
        reorder.set_weights([np.eye(3)[::-1].astype("float32"),
                             -np.array([103.939, 116.779, 123.68], dtype="float32")])
        return x
    return inputs


def _up_to_head(model):
    """A model's layers up to its classifier head: up to the layer named 'features' (a cnn
    run's Flatten), else up to the trailing Dense / Dropout layers."""
    names = [layer.name for layer in model.layers]
    if "features" in names:
        end = model.get_layer("features")
    else:
        kept = list(model.layers)
        while kept and isinstance(kept[-1], (layers.Dense, layers.Dropout, layers.Activation)):
            kept.pop()
        if len(kept) < 2:
            raise DlrefError(f"{model.name} has no layers before its classifier head to "
                             "transfer.")
        end = kept[-1]
    return keras.Model(model.inputs, end.output, name="base")


def _source_network(config, data, pretrained):
    """Built-in data: the cnn recipe's network, trained on the source task (digits 0-4) first
    when `pretrained`. Trained once per Dataset (the scratch baseline reuses nothing)."""
    x, y = data.extra["source_task"]
    cnn_config = cnn.Config(seed=config.seed)
    source = Dataset((x, y), (x[:0], y[:0]), (x[:0], y[:0]),
                     {"classes": [str(d) for d in range(5)], "image_shape": [28, 28, 1],
                      "flip_safe": False})
    model = cnn.build_model(cnn_config, source)
    if pretrained:
        if "pretrained_base" in data.extra:
            return data.extra["pretrained_base"]
        print(f"Pretraining the base on digits 0-4 ({len(y):,} images, "
              f"{plural(config.pretrain_epochs, 'epoch')})...", flush=True)
        keras.utils.set_random_seed(config.seed)
        history = model.fit(x, y, batch_size=cnn_config.batch_size, epochs=config.pretrain_epochs,
                            shuffle=True, verbose=0)
        print(f"  source-task training accuracy {history.history['accuracy'][-1]:.4f}",
              flush=True)
        data.extra["pretrained_base"] = _up_to_head(model)
        return data.extra["pretrained_base"]
    return _up_to_head(model)


def _assemble(base, config, meta):
    inputs = keras.Input(shape=tuple(meta["image_shape"]), name="pixels")
    # training=False: the base's batch normalization keeps its pretrained statistics, also when
    # its top layers are fine-tuned (Keras' transfer learning guide).
    x = base(inputs, training=False)
    if len(x.shape) == 4:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    if config.dropout_rate:
        x = layers.Dropout(config.dropout_rate, name="dropout")(x)
    outputs = layers.Dense(len(meta["classes"]), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"transfer_{config.base}")


# --- Stages: the base frozen, then its top layers fine-tuned -----------------------------------


def stages(config):
    """Stage 1 for feature_epochs, stage 2 for the epochs after it (none when epochs is not
    more than feature_epochs)."""
    first = (f"feature extraction, base frozen ({config.optimizer} {config.learning_rate:g})",
             min(config.feature_epochs, config.epochs))
    if config.epochs <= config.feature_epochs:
        return [first]
    return [first, (f"fine-tuning the top {config.fine_tune_fraction:.0%} of the base (SGD "
                    f"{config.fine_tune_learning_rate:g}, momentum {config.fine_tune_momentum:g})",
                    config.epochs)]


def enter_stage(model, config, data, index):
    """Freezes (stage 0) or partly unfreezes (stage 1) the base and compiles for the stage."""
    base = model.get_layer("base")
    if index == 0:
        base.trainable = False
        optimizer = common.make_optimizer(config)
    else:
        base.trainable = True
        # Batch normalization stays frozen: its statistics are the pretrained ones.
        tunable = [layer for layer in base.layers if layer.weights
                   and not isinstance(layer, layers.BatchNormalization)]
        top = tunable[len(tunable) - math.ceil(len(tunable) * config.fine_tune_fraction):]
        for layer in base.layers:
            layer.trainable = any(layer is chosen for chosen in top)
        optimizer = keras.optimizers.SGD(config.fine_tune_learning_rate,
                                         momentum=config.fine_tune_momentum)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


# --- Evaluation: as multiclass, beside the same network trained from scratch -------------------


score = multiclass.score
evaluate = multiclass.evaluate
loss_label = multiclass.loss_label


def classical_outputs(data, seed):
    """The test probabilities of the same network trained from scratch (random weights, every
    layer trainable) on the same images, with stage 1's optimizer for all the epochs and early
    stopping on val_loss."""
    from dlref.training import eval_batch_size

    config = data.extra.get("config")
    if config is None or not config.scratch_baseline:
        return None
    print(f"\nTraining the same network from scratch for the comparison (up to "
          f"{plural(config.epochs, 'epoch')})...", flush=True)
    keras.utils.set_random_seed(seed)
    model = _assemble(_base(config, data, pretrained=False), config, data.meta)
    model.compile(optimizer=common.make_optimizer(config), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(patience=max(3, config.early_stopping_patience),
                                         restore_best_weights=True)
    history = model.fit(*data.train, batch_size=config.batch_size, epochs=config.epochs,
                        validation_data=data.val, callbacks=[stop], verbose=0,
                        validation_batch_size=eval_batch_size(config))
    print(f"  from scratch: best val_loss {min(history.history['val_loss']):.4f} after "
          f"{len(history.history['val_loss'])} epochs", flush=True)
    return model.predict(data.test[0], verbose=0, batch_size=256)


# The confusion matrix and the misclassified test images, as for cnn.
plots = cnn.plots


# --- New images: evaluate --data and predict ----------------------------------------------------


load_labelled = images.load_labelled
predict = cnn.predict
