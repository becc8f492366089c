"""Errors that the CLI turns into one clear line and a non-zero exit (never a traceback wall)."""

from __future__ import annotations


class MidtrainError(Exception):
    """A user-facing error: bad input, bad config, refused overwrite. The message names the culprit."""

    exit_code = 2


class ConfigError(MidtrainError):
    """An invalid config file, key, value or override."""


class DataError(MidtrainError):
    """Missing, empty or malformed input data; the message names the file and line."""


class RunDirError(MidtrainError):
    """A run directory that cannot be used as asked (finished with another config, foreign content)."""
