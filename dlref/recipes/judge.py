"""The judge of a generative recipe, whose verdict on generated images is the gan recipe's
`quality` (chapter 13).

Images of several classes get a small CNN classifier trained on the real images (`quality`: the
share of samples it labels with confidence; `class_spread`: how evenly the labels fall across
the classes). A folder of one class (faces, say) has nothing to label, so its judge measures
nearness to the real images instead, the improved precision of Kynkaanniemi et al. (2019) and
the coverage of Naeem et al. (2020) in shrunk pixel space: `quality` is the share of
samples that lie among the real images (noise lies far from all of them), `coverage` the share
of real images with a sample near them (mode collapse brings it down)."""

import math

import keras
import numpy as np
from keras import layers


def judge_of(data):
    """The Dataset's judge, made once (seeded): a ClassJudge, or a NeighbourJudge for one
    class."""
    if "judge" not in data.extra:
        settings = data.extra["gan"]
        keras.utils.set_random_seed(settings["seed"])
        if len(data.meta["classes"]) > 1:
            data.extra["judge"] = ClassJudge(data, settings)
        else:
            data.extra["judge"] = NeighbourJudge(data, settings)
    return data.extra["judge"]


class ClassJudge:
    """A small CNN classifier of the real training images."""

    spread = "class_spread"

    def __init__(self, data, settings):
        classes = len(data.meta["classes"])
        inputs = keras.Input(shape=tuple(data.meta["image_shape"]), name="image")
        x = layers.Rescaling(1 / 255, name="rescale")(inputs)
        for index, filters in enumerate((32, 64), start=1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"conv_{index}")(x)
            x = layers.MaxPooling2D(2, padding="same", name=f"pool_{index}")(x)
        x = layers.Dropout(0.5, name="dropout")(layers.Flatten(name="flatten")(x))
        outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
        self.model = keras.Model(inputs, outputs, name="judge")
        self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        self.model.fit(*data.train, batch_size=64, epochs=settings["judge_epochs"], verbose=0)
        x_test, y_test = data.test
        self.accuracy = float(np.mean(probabilities(self.model, x_test).argmax(axis=1) == y_test))
        self.confidence, self.classes = settings["confidence"], data.meta["classes"]
        self.trained_on = len(data.train[1])

    def scores(self, images):
        """{'confident_share', 'class_spread'}: the first is what `quality` logs."""
        return judged(probabilities(self.model, images), self.confidence)

    def figures(self):
        return {"judge_accuracy": {"real": self.accuracy}}

    def labels(self, images):
        """(title, passes) per image: its class and confidence."""
        found = probabilities(self.model, images)
        return [(f"{self.classes[p.argmax()]} {p.max():.2f}", bool(p.max() > self.confidence))
                for p in found]

    def plot_title(self):
        return f"Generated samples, labelled by the judge (red: confidence <= {self.confidence})"

    def report(self, generated, real):
        counts = {name: np.bincount(probabilities(self.model, images).argmax(axis=1),
                                    minlength=len(self.classes))
                  for name, images in (("model", generated), ("real", real))}
        width = max(6, *map(len, map(str, self.classes)))
        lines = [f"{'class':<{width}}  generated  real"] + [
            f"{name:<{width}}  {counts['model'][i]:>9,}  {counts['real'][i]:>4,}"
            for i, name in enumerate(self.classes)]
        return (f"The judge (a CNN trained on {self.trained_on:,} real images, test accuracy "
                f"{self.accuracy:.3f}) labels {len(generated):,} generated and {len(real):,} "
                f"real test images; a label counts as confident above {self.confidence}. "
                "Predicted classes:\n" + "\n".join(lines))


class NeighbourJudge:
    """Nearness to the real images, for one class (nothing to label), in pixel space shrunk to
    at most 16 pixels a side, each image centred and scaled to length 1 (`_shrunk`): each real
    training image's neighbourhood reaches its 3rd nearest real neighbour. A sample is
    realistic when it lies in some real image's neighbourhood (the improved precision of
    Kynkaanniemi et al., 2019) and is not flat (under half the contrast of the faintest real
    images); `coverage` is the share of real images whose neighbourhood holds a sample (Naeem
    et al., 2020), from as many samples as there are real test images, so that real and
    generated images are scored alike."""

    spread = "coverage"

    def __init__(self, data, settings, k=3, limit=2000):
        self.k = k
        self.train, contrast = _shrunk(data.train[0][:limit])
        self.radii = _kth_distance(self.train, k)
        # Scaling each image to length 1 would make a nearly flat sample's faint traces as
        # strong as a real image's detail: a sample with under half the contrast of the
        # faintest real images (their 1st percentile) is near none of them.
        self.min_contrast = 0.5 * float(np.percentile(contrast, 1))
        self.count = min(len(data.test[0]), 500)  # Images a coverage is measured from.
        self.trained_on = len(self.train)

    def _near(self, images):
        """(images x real images: whether each image lies in each real image's neighbourhood,
        each image's distance to the nearest real one, whether each image is flat): a flat
        image (under min_contrast) is in no neighbourhood."""
        points, contrast = _shrunk(images)
        distances = _distances(points, self.train)
        flat = contrast < self.min_contrast
        return (distances <= self.radii[None]) & ~flat[:, None], distances.min(axis=1), flat

    def scores(self, images):
        """{'realistic_share', 'coverage'}: the first is what `quality` logs."""
        near, _, _ = self._near(images)
        return {"realistic_share": float(np.mean(near.any(axis=1))),
                "coverage": float(np.mean(near[:self.count].any(axis=0)))}

    def figures(self):
        return {}

    def labels(self, images):
        """(title, passes) per image: the distance to the nearest real training image, or
        'flat' for an image without the real images' contrast."""
        near, nearest, flat = self._near(images)
        return [("flat" if faint else f"nearest {d:.3f}", bool(inside))
                for d, inside, faint in zip(nearest, near.any(axis=1), flat, strict=True)]

    def plot_title(self):
        return ("Generated samples and their distance to the nearest real image (red: outside "
                "every real image's neighbourhood)")

    def report(self, generated, real):
        return (f"The judge compares images with {self.trained_on:,} real training images, "
                "shrunk to at most 16 pixels a side (one class: nothing to label). An image is "
                "realistic when it is nearer to some real image than that image's 3rd nearest "
                f"real neighbour; coverage is the share of the real images with one of "
                f"{self.count:,} generated (or real test) images that near: towards 0, the "
                "samples lack the real images' variety (mode collapse).")


def _shrunk(images, side=16):
    """(rows, contrast): uint8 images as rows of pixels averaged down to at most `side` a side,
    each row centred and scaled to length 1, so that brightness and contrast do not count and
    shapes and colours do (a faint smudge is not near a thin stroke); and each image's
    contrast: how much its pixels vary across the image, per colour channel (0 for an image
    of one colour)."""
    x = images.astype("float32") / 255
    step = max(1, math.ceil(max(x.shape[1:3]) / side))
    height, width = (x.shape[1] // step) * step, (x.shape[2] // step) * step
    x = x[:, :height, :width].reshape(len(x), height // step, step, width // step, step, -1)
    small = x.mean(axis=(2, 4)).astype("float64")
    contrast = small.std(axis=(1, 2)).mean(axis=-1)
    rows = small.reshape(len(x), -1)
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6), contrast


def _distances(a, b):
    """Euclidean distances between the rows of a and of b."""
    squares = (a ** 2).sum(axis=1)[:, None] + (b ** 2).sum(axis=1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(squares, 0))


def _kth_distance(points, k):
    """Each point's distance to its k-th nearest other point."""
    distances = _distances(points, points)
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, min(k, len(points) - 1) - 1]


def probabilities(model, pixels, batch_size=512):
    """The model's outputs for uint8 images, in batches (predict_on_batch: no per-call set-up)."""
    return np.concatenate([np.asarray(model.predict_on_batch(pixels[start:start + batch_size]))
                           for start in range(0, len(pixels), batch_size)])


def judged(outputs, confidence):
    """{'confident_share': share labelled with probability > confidence, 'class_spread':
    normalized entropy of the predicted classes (1 = all equally often, 0 = one class)}.

    Args:
        outputs: the judge's class probabilities, one row per image.
    """
    classes = outputs.shape[1]
    counts = np.bincount(outputs.argmax(axis=1), minlength=classes)
    shares = counts[counts > 0] / counts.sum()
    entropy = -(shares * np.log(shares)).sum() + 0.0  # + 0.0: one class gives 0, not -0.
    spread = float(entropy / math.log(classes)) if classes > 1 else 1.0
    return {"confident_share": float(np.mean(outputs.max(axis=1) > confidence)),
            "class_spread": spread}
