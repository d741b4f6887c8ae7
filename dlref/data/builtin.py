"""Built-in offline datasets and the book's named datasets (downloaded through Keras' cache).

Each loader returns (frame, target column, test frame or None): tabular data goes through the
same validation and preprocessing as a user's CSV.
"""

import numpy as np
import pandas as pd

from dlref.errors import DlrefError


def wine():
    """scikit-learn's wine data, predicting alcohol from the other 12 measurements (book ch 2)."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.drop(columns="target")
    return frame, "alcohol", None


def breast_cancer():
    """Wisconsin breast cancer: 569 tumours, 30 features, malignant vs benign."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    return frame, "diagnosis", None


def digits():
    """scikit-learn's 8x8 handwritten digits: 1,797 images, 10 classes (offline MNIST)."""
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame
    return frame.rename(columns={"target": "digit"}), "digit", None


def mnist():
    """MNIST 28x28 digits from Keras' cache, with its official 10,000-image test set."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # Offline: urllib, socket and HTTP errors all land here.
        raise DlrefError(
            f"Could not download MNIST ({type(error).__name__}: {error}). Without network "
            "access, train on the offline default instead: drop --dataset (built-in: digits)."
        ) from None
    columns = [f"pixel_{i}" for i in range(784)]

    def frame(images, labels):
        table = pd.DataFrame(images.reshape(len(images), -1), columns=columns)
        table["digit"] = labels
        return table

    return frame(x_train, y_train), "digit", frame(x_test, y_test)


DATASETS = {"wine": wine, "breast_cancer": breast_cancer, "digits": digits, "mnist": mnist}


def load(name):
    if name not in DATASETS:
        raise DlrefError(f"Unknown dataset {name!r}. Known: {', '.join(DATASETS)}.")
    return DATASETS[name]()
