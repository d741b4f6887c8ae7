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


# How each codec that `encoding_of` picks is named in notes.
ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16",
                  "utf-16-le": "UTF-16", "cp1252": "Windows-1252 (Latin-1)", "latin-1": "Latin-1"}


def encoding_of(raw, partial=False):
    """The codec of a text file's bytes, as editors save them: UTF-8 (with or without a
    byte-order mark), UTF-16 (Windows' "Unicode", with a mark, or little-endian without one),
    else Windows-1252, else Latin-1; None: binary (NUL bytes, not UTF-16).

    partial: `raw` is the file's start, so a character cut at its end is not an error."""
    import codecs

    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    head = raw[:4096]
    if len(head) >= 4 and head[1::2].count(0) > 0.9 * (len(head) // 2) and not head[::2].count(0):
        return "utf-16-le"
    if b"\x00" in head:
        return None
    try:
        raw.decode("utf-8")
        return "utf-8-sig" if raw.startswith(codecs.BOM_UTF8) else "utf-8"
    except UnicodeDecodeError as error:
        if partial and error.start >= len(raw) - 3 and "end of data" in error.reason:
            return "utf-8-sig" if raw.startswith(codecs.BOM_UTF8) else "utf-8"
    try:
        raw.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def decoded(raw):
    """(text, name of its encoding) of a text file's bytes (`encoding_of`); ("", None) for a
    binary file."""
    codec = encoding_of(raw)
    if codec is None:
        return "", None
    return raw.decode(codec, errors="replace"), ENCODING_NAMES[codec]
