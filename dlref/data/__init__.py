"""Data sources shared by the recipes (DESIGN.md section 3)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a recipe's data comes from: --data PATH, --dataset NAME, or the built-in default.

    Args:
        data: path to the user's own data.
        dataset: a named dataset (the book's, downloaded through Keras' cache).
        target: the column to predict, for tabular data.
        positive_class: for a binary recipe on a multi-valued target: one-vs-rest on this value.
    """

    data: str | None = None
    dataset: str | None = None
    target: str | None = None
    positive_class: str | None = None

    def describe(self):
        if self.data:
            return f"{self.data} (target {self.target})" if self.target else str(self.data)
        return self.dataset or "built-in"


@dataclasses.dataclass
class Dataset:
    """What a recipe's load_data returns.

    `meta` is plain JSON: everything a prediction needs later (scaler, labels, thresholds),
    saved beside the model. `fingerprint` identifies the data, so a resume or evaluate on
    different data is noticed.
    """

    train: tuple
    val: tuple
    test: tuple
    meta: dict
    fingerprint: str = ""
    classical: dict = dataclasses.field(default_factory=dict)
