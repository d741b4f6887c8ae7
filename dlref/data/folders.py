"""Folders of labelled files as datasets are shipped: one sub-folder per class, perhaps inside
train / val / test folders, perhaps inside one more folder that a zip unpacked into."""

import os
from collections import Counter
from pathlib import Path

from dlref.errors import DlrefError
from dlref.text import plural, shown_path

# Files that systems leave beside data, never named in the note on ignored files.
SYSTEM_FILES = ("thumbs.db", "desktop.ini")

# Names of split folders (any letter case), by the split they hold.
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def hidden(name):
    """Folders and files no one means as data: hidden ones (.DS_Store, ._ files), and the
    __MACOSX copy of a zip made on a Mac."""
    return name.startswith(".") or name == "__MACOSX"


def files_under(root, extensions, others=None):
    """Files under `root` (any depth) whose extension, in any letter case, is one of
    `extensions` ("" for files without one); hidden files and folders are left out
    (.DS_Store, ._ files of macOS). The other files' paths are added to the list `others`
    when one is given (system files excepted)."""
    found = []
    for folder, names_of_folders, names in os.walk(root):
        names_of_folders[:] = sorted(name for name in names_of_folders if not hidden(name))
        for name in sorted(names):
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in extensions:
                found.append(Path(folder) / name)
            elif others is not None and name.lower() not in SYSTEM_FILES:
                others.append(Path(folder) / name)
    return found


def ignored_note(others, root, wanted, kinds):
    """A note on the files under `root` left out for their extension (`others`), by
    extension: a folder of .heic photos or .html pages would otherwise be left out without a
    word. `wanted` names the files read ("an image's"), `kinds` their extensions."""
    if not others:
        return []
    return [f"Ignored {plural(len(others), 'file')} in {shown_path(root)} whose extension is not "
            f"{wanted} ({counted(others)}); dlref reads {kinds}."]


def counted(others):
    """'.heic 12, .txt 1': files left out for their extension, by extension."""
    counts = Counter(path.suffix.lower() or "no extension" for path in others)
    return ", ".join(f"{kind} {count}" for kind, count in counts.most_common(6)) + (
        ", ..." if len(counts) > 6 else "")


def subfolders(root):
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not hidden(p.name))


def existing(path):
    """`path` as a Path, or a clear error when nothing is there."""
    path = Path(path)
    if not path.exists():
        raise DlrefError(f"No such file or folder: {shown_path(path)}")
    return path


def dataset_root(path, notes):
    """The folder under `path` that holds the class folders (or split folders of them): a
    folder whose single sub-folder has folders in it cannot be the classes, so that sub-folder
    is read (a zip often unpacks into one folder more: chest_xray/chest_xray/train/...), with
    a note."""
    root = existing(path)
    while root.is_dir() and len(inside := subfolders(root)) == 1 and subfolders(inside[0]):
        notes.append(f"Reading {shown_path(inside[0])}, the only folder in {shown_path(root)}.")
        root = inside[0]
    return root


def split_folders(root):
    """{'train': folder, 'val': ..., 'test': ...} when every sub-folder of `root` is named as
    a split (train, val / valid / validation / dev, test / testing) and one is a training
    folder; else {}."""
    if not Path(root).is_dir():
        return {}
    inside = subfolders(root)
    named = {SPLIT_FOLDERS.get(p.name.lower()): p for p in inside}
    if len(inside) < 2 or None in named or "train" not in named or len(named) < len(inside):
        return {}
    return named


def layout_note(root, layout):
    """'Split folders in data, used as given: train, validation (val), test.'"""
    named = [layout[split].name + ("" if layout[split].name == split else f" ({split})")
             for split in ("train", "val", "test") if split in layout]
    drawn = [what for split, what in (("val", "validation"), ("test", "test"))
             if split not in layout]
    return (f"Split folders in {shown_path(root)}, used as given: {', '.join(named)}"
            + (f"; {' and '.join(drawn)} items are drawn from the training folder"
               if drawn else "") + ".")
