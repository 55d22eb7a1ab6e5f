"""Errors a user can fix. The CLI prints each as one line and exits with its code, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GradexpError(Exception):
    """A problem with the user's input or environment: one line naming the problem and the fix."""

    exit_code = 2


class ConfigError(GradexpError):
    pass


class DataError(GradexpError):
    pass


class RunsError(GradexpError):
    pass


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""


def choices_text(choices: Iterable[str], limit: int = 40) -> str:
    items = list(choices)
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")
