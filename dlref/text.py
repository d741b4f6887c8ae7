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


def decoded(raw):
    """(text, encoding) of a text file's bytes, as editors save them: UTF-8 (with or without a
    byte-order mark), UTF-16 (Windows' "Unicode", with a mark, or little-endian without one),
    else Windows-1252, else Latin-1. None as the encoding: binary (NUL bytes in plain
    UTF-8)."""
    import codecs

    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace"), "UTF-16"
    head = raw[:4096]
    if len(head) >= 4 and head[1::2].count(0) > 0.9 * (len(head) // 2) and not head[::2].count(0):
        return raw.decode("utf-16-le", errors="replace"), "UTF-16"
    if b"\x00" in head:
        return "", None
    try:
        return raw.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "Windows-1252 (Latin-1)"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "Latin-1"
