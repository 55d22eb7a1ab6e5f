"""Errors a user can fix. The CLI prints each as one line and exits with its code, no traceback."""

from __future__ import annotations

import datetime
import difflib
import errno
import math
import reprlib
from collections.abc import Iterable
from typing import Any

MAX_SHOWN = 60  # characters of a bad value an error line echoes


class GradexpError(Exception):
    """A problem with the user's input or environment: one line naming the problem and the fix.

    Messages quote what the user wrote; control characters in it (a newline in a YAML key, a stray
    byte decoded as a surrogate) are escaped so the message stays one printable line."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        super().__init__(*(one_line(a) if isinstance(a, str) else a for a in args))


def one_line(text: str) -> str:
    """`text` with newlines and other unprintable characters written as escapes (\\n, \\x00, \\udcff)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(GradexpError):
    pass


class RunFailed(GradexpError):
    """A run that started but could not finish for a reason outside gradexp (a full disk): one line,
    the exit code of a failed run."""

    exit_code = 1


# Errors about a path the user gave or the disk it is on: what to do about each.
OS_ERROR_FIXES = {
    errno.ENAMETOOLONG: "give a shorter path",
    errno.ELOOP: "fix or remove the link",
    errno.EACCES: "fix its permissions or choose another path",
    errno.EPERM: "fix its permissions or choose another path",
    errno.EROFS: "choose a folder on a writable disk",
    errno.ENOSPC: "free some space or choose a folder on another disk (--runs-dir)",
    errno.EDQUOT: "free some space or choose a folder on another disk (--runs-dir)",
    errno.EISDIR: "a folder stands where a file goes; move it away or choose another path",
    errno.ENOTDIR: "a file stands where a folder goes; check the path",
    errno.ENOENT: "check the path (was a folder moved or removed?)",
}


# Errors that are about the user's paths only when they name one; without a path they are bugs.
NEEDS_A_PATH = (errno.EISDIR, errno.ENOTDIR, errno.ENOENT)


def os_error_line(exc: OSError) -> str | None:
    """'X: Permission denied; fix its permissions or choose another path' for an error about a path or
    its disk (OS_ERROR_FIXES), None for any other."""
    fix = OS_ERROR_FIXES.get(exc.errno) if exc.errno is not None else None
    if fix is None or (exc.filename is None and exc.errno in NEEDS_A_PATH):
        return None
    where = f"{short_path(str(exc.filename))}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror}; {fix}"


class DataError(GradexpError):
    pass


class RunsError(GradexpError):
    pass


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or ''.

    Candidates are the similar ones by difflib; among them the fewest typing edits wins, so a swapped
    pair of letters (`adma`) suggests `adam` rather than the longer `adamax`."""
    # Compared without case, '_' and '-': Keras's class names and shouted names (LeakyReLU, HE_NORMAL)
    # are the same names written another way.
    text = _folded(str(value))
    folded = {_folded(c): c for c in choices}
    matches = difflib.get_close_matches(text, list(folded), n=5, cutoff=0.6)
    if not matches:
        return ""
    best = min(matches, key=lambda choice: _edit_distance(text, choice))  # ties keep difflib's order
    return f"; did you mean '{folded[best]}'?"


def _folded(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[len(b)]


def choices_text(choices: Iterable[str], limit: int = 40) -> str:
    items = list(choices)
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


# ---------------------------------------------------------------- quoting what the user wrote


def yaml_type(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null", datetime.date: "date",
            datetime.datetime: "timestamp"}.get(type(value), type(value).__name__)


def with_article(noun: str) -> str:
    return f"{'an' if noun[:1] in tuple('aeiou') else 'a'} {noun}"


def short(text: str) -> str:
    """`text` cut to MAX_SHOWN characters with an ellipsis: a pasted blob keeps the error line short."""
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def short_path(text: str) -> str:
    """A path cut to MAX_SHOWN characters from its start: its end names the file."""
    return text if len(text) <= MAX_SHOWN else "…" + text[1 - MAX_SHOWN:]


def huge_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200


def shown(value: Any) -> str:
    """`repr(value)`, shortened; the repr itself is bounded too (an int of a million digits, a huge list)."""
    if huge_int(value):
        return f"an integer of {digits(value)} digits"
    if isinstance(value, datetime.date):  # YAML reads 2020-01-01 as a date; show it as written
        return value.isoformat()
    return short(_REPR.repr(value))


def digits(n: int) -> int:
    """Decimal digits of |n|, without str(n) once n is too long for Python to print."""
    n = abs(n)
    return len(str(n)) if n.bit_length() <= 10_000 else int(n.bit_length() * math.log10(2)) + 1


def got(value: Any) -> str:
    """'string 'ten'', 'integer 0', 'an integer of 5000 digits', or just 'null'."""
    if value is None:
        return "null"
    return shown(value) if huge_int(value) else f"{yaml_type(value)} {shown(value)}"


class _BoundedRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        """Inside a list or mapping too, a huge integer is described, not printed (Python refuses to
        print one of over 4,300 digits)."""
        return f"<an integer of {digits(x)} digits>" if huge_int(x) else super().repr_int(x, level)


_REPR = _BoundedRepr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 4 * MAX_SHOWN
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = MAX_SHOWN // 2
