"""The judge of a generative recipe: a small CNN trained on the real images, whose labels say
how recognizable generated images are (the gan recipe's `quality`, chapter 13)."""

import math

import keras
import numpy as np
from keras import layers


def judge(data):
    """A small CNN trained on the real training images (seeded, once per Dataset): it labels
    generated images for `quality`. Returns (model, its accuracy on the real test images)."""
    if "judge" not in data.extra:
        settings = data.extra["gan"]
        keras.utils.set_random_seed(settings["seed"])
        classes = len(data.meta["classes"])
        inputs = keras.Input(shape=tuple(data.meta["image_shape"]), name="image")
        x = layers.Rescaling(1 / 255, name="rescale")(inputs)
        for index, filters in enumerate((32, 64), start=1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"conv_{index}")(x)
            x = layers.MaxPooling2D(2, padding="same", name=f"pool_{index}")(x)
        x = layers.Dropout(0.5, name="dropout")(layers.Flatten(name="flatten")(x))
        outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
        model = keras.Model(inputs, outputs, name="judge")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(*data.train, batch_size=64, epochs=settings["judge_epochs"], verbose=0)
        x_test, y_test = data.test
        accuracy = float(np.mean(probabilities(model, x_test).argmax(axis=1) == y_test))
        data.extra["judge"] = (model, accuracy)
    return data.extra["judge"]


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
