"""Numbers and lists in messages, written the way people read them."""


def plural(count, word, many=None):
    """'1 row', '2 rows', '1,234 rows'; `many` for irregular plurals ('1 class', '2 classes')."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def listing(names, limit=8):
    """'a, b, c' or 'a, b, c and 12 more'."""
    names = [str(name) for name in names]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def shown_path(path):
    """A path as a user would type it: relative when it lies under the working folder."""
    import os

    text = str(path)
    try:
        relative = os.path.relpath(text)
    except ValueError:  # Another drive (Windows).
        return text
    return relative if os.path.isabs(text) and not relative.startswith("..") else text
