"""The one exception type the CLI turns into a clear message and exit code 2."""

import difflib


class DlrefError(ValueError):
    """A usage or data error the user can fix: shown without a traceback, exit code 2."""


def close_match(word, candidates):
    """Returns ' Did you mean 'x'?' for the closest candidate, or an empty string."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""
