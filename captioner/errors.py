"""The project's error types: user-facing problems with a one-line message naming the file."""

from __future__ import annotations


class CaptionerError(Exception):
    """A problem with the user's input (a file, a dataset, a run directory), not a bug.

    The command line prints the message on one line, without a traceback unless `--debug`.
    """


class ImageLoadError(CaptionerError):
    """An image file that cannot be read; the message names the file and the reason."""


class DatasetError(CaptionerError, ValueError):
    """A dataset file that cannot be used; the message names the file and the problem."""


class RunDirectoryError(CaptionerError, ValueError):
    """A run directory or model file that cannot be loaded; the message names the file."""
