"""Errors of the loss zoo: plain ``ValueError``/``KeyError`` subclasses (``losses`` never imports ``lss_vlm``)."""

from __future__ import annotations


class LossConfigError(ValueError):
    """A loss name, keyword argument or value is invalid; the message names it and lists the valid choices."""


class UnknownLossError(LossConfigError, KeyError):
    """The requested loss name is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""
