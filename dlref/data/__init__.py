"""Data sources shared by the recipes (DESIGN.md section 3)."""

import dataclasses
from pathlib import Path

MISSING_MODES = ("impute", "drop", "error")


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a recipe's data comes from, and how a table is read: everything that decides what
    data a run trained on. Recorded in run.json and in config.toml / best.toml ([data]).

    Args:
        data: path to the user's own data.
        dataset: a named dataset (the book's, downloaded through Keras' cache).
        target: the column to predict, for tabular data.
        positive_class: for a binary recipe on a multi-valued target: one-vs-rest on this value.
        val_data, test_data: pre-split files used as the validation / test splits as given.
        missing: gaps in the features: impute (default), drop (the rows) or error.
        drop: columns to leave out.
        features: the only feature columns to use (None: every usable column).
        max_categories: a text column keeps its most frequent values, the rest become "other".
        date_column: for a time series: the column with each row's date or time.
        text_column: for text classification: the column holding each row's text.
        embeddings: for text: a GloVe-format file of pretrained word vectors.
    """

    data: str | None = None
    dataset: str | None = None
    target: str | None = None
    positive_class: str | None = None
    val_data: str | None = None
    test_data: str | None = None
    missing: str | None = None
    drop: tuple = ()
    features: tuple | None = None
    max_categories: int | None = None
    date_column: str | None = None
    text_column: str | None = None
    embeddings: str | None = None

    def __post_init__(self):
        # JSON and TOML give lists back; keep the dataclass hashable and comparable.
        object.__setattr__(self, "drop", tuple(self.drop or ()))
        if self.features is not None:
            object.__setattr__(self, "features", tuple(self.features))

    @classmethod
    def from_dict(cls, values):
        """A Source from run.json or a [data] table; unknown keys (a newer dlref's) are refused
        by the caller, older manifests simply lack the newer keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in known})

    def to_dict(self):
        """The fields that are set, as plain TOML / JSON values."""
        values = dataclasses.asdict(self)
        values["drop"] = list(self.drop)
        values["features"] = list(self.features) if self.features is not None else None
        return {k: v for k, v in values.items() if v not in (None, [])}

    def over(self, recorded):
        """This source (given on the command line) on top of a recorded one: where the data
        lives is replaced as a whole when given, the other options one by one."""
        given = self.to_dict()
        base = recorded.to_dict()
        if "data" in given or "dataset" in given:
            for key in ("data", "dataset", "val_data", "test_data"):
                base.pop(key, None)
        if "dataset" in given:  # A named dataset has its own columns and target.
            for key in ("target", "positive_class", "drop", "features"):
                base.pop(key, None)
        return Source.from_dict({**base, **given})

    def describe(self):
        """The source in a line: the file or dataset, then the options that shape the rows."""
        from dlref.text import shown_path

        where = shown_path(self.data) if self.data else self.dataset or "built-in data"
        options = [f"target {self.target}"] if self.target else []
        options += [f"positive class {self.positive_class}"] if self.positive_class else []
        options += [f"--val-data {shown_path(self.val_data)}"] if self.val_data else []
        options += [f"--test-data {shown_path(self.test_data)}"] if self.test_data else []
        options += [f"--missing {self.missing}"] if self.missing else []
        options += [f"--drop {', '.join(self.drop)}"] if self.drop else []
        options += [f"--features {','.join(self.features)}"] if self.features else []
        options += [f"--max-categories {self.max_categories}"] if self.max_categories else []
        options += [f"--date-column {self.date_column}"] if self.date_column else []
        options += [f"--text-column {self.text_column}"] if self.text_column else []
        options += [f"--embeddings {shown_path(self.embeddings)}"] if self.embeddings else []
        return f"{where} ({'; '.join(options)})" if options else str(where)

    def refuse_options(self, recipe, *options):
        """Refuses the given options (field names) that `recipe` does not read, naming the recipe
        that does."""
        owners = {"date_column": ("--date-column", "timeseries"),
                  "text_column": ("--text-column", "text"),
                  "embeddings": ("--embeddings", "text")}
        from dlref.errors import DlrefError

        for field in options:
            if getattr(self, field):
                flag, owner = owners[field]
                raise DlrefError(f"{flag} goes with the {owner} recipe (dlref train {owner}), "
                                 f"not with {recipe}.")

    def short(self):
        """A few characters for `dlref runs`: the file's name or the dataset's."""
        if self.data:
            return Path(self.data).name
        return self.dataset or "built-in"


# A key of Dataset.extra that training sets while it builds a model whose every weight a backup
# then overwrites (a resume): build_model may skip what only sets first weights.
WEIGHTS_FROM_BACKUP = "weights_from_backup"


@dataclasses.dataclass
class Dataset:
    """What a recipe's load_data returns.

    `meta` is plain JSON: everything a prediction needs later (scaler, labels, thresholds),
    saved beside the model. `fingerprint` identifies the data, so a resume or evaluate on
    different data is noticed. `notes` are lines for the user about what was done to the data
    (shown before training), `warnings` lines about what looks wrong.
    """

    train: tuple
    val: tuple
    test: tuple
    meta: dict
    fingerprint: str = ""
    classical: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)  # For evaluate and plots; not saved.
