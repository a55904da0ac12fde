"""Errors rflens raises for bad input. Each message is one line: what was wrong, where, what to do."""

from __future__ import annotations


class RflensError(Exception):
    """Bad input from the user (model, shape, spec file, option). The CLI prints it on one line and
    exits with code 2; the message must say what was wrong, which op/module/file, and what to do."""


class UnsupportedOpError(RflensError):
    """An op rflens has no receptive-field rule for, raised only in strict mode."""


class InputTooSmallError(RflensError):
    """The input is too small for some layer of the model."""
