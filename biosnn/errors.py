"""Errors raised by biosnn.

Every error a user can cause is a :class:`BiosnnError`.  Errors about a network
spec say *where* (file and field) and *what to do*, in the style of Brian2's
own fix-it messages.
"""

from __future__ import annotations

import sys

__all__ = ["BiosnnError", "SpecError", "BackendError", "ConversionError", "quiet_brian2_banner"]


class BiosnnError(Exception):
    """Base class of every error biosnn raises for bad input."""


class SpecError(BiosnnError):
    """A network spec is invalid.

    Parameters
    ----------
    message : str
        What is wrong.
    field : str, optional
        Dotted path of the offending field, e.g. ``populations.exc.size``.
    file : str, optional
        The spec file the field was read from.
    fix : str, optional
        What the user should do about it.
    """

    def __init__(self, message: str, *, field: str | None = None,
                 file: str | None = None, fix: str | None = None):
        self.message = message
        self.field = field
        self.file = file
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(f"file '{self.file}'")
        if self.field:
            where.append(f"field '{self.field}'")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.fix:
            text += f" Fix: {self.fix}"
        return text

    def located(self, *, file: str | None = None, prefix: str | None = None) -> "SpecError":
        """Return a copy that names ``file`` and prefixes the field path."""
        field = self.field
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        return SpecError(self.message, field=field, file=file or self.file, fix=self.fix)


class BackendError(BiosnnError):
    """A backend is unavailable or failed to build or run a network."""


class ConversionError(BiosnnError):
    """A torch model cannot be converted (unsupported layer, bad coding parameters)."""


def quiet_brian2_banner() -> None:
    """Uncaught biosnn errors print plainly, without Brian2's "please report this issue" banner.

    Brian2 replaces ``sys.excepthook`` on import with a hook that asks users
    to report every uncaught exception to Brian2; a :class:`BiosnnError` is the
    user's mistake, not a Brian2 bug, so it goes to Python's default hook (other
    exceptions still reach Brian2's hook).  Idempotent.
    """
    hook = sys.excepthook
    if getattr(hook, "__module__", "") != "brian2.utils.logger":
        return

    def biosnn_excepthook(exc_type, exc, tb, _brian2_hook=hook):
        if isinstance(exc_type, type) and issubclass(exc_type, BiosnnError):
            return sys.__excepthook__(exc_type, exc, tb)
        return _brian2_hook(exc_type, exc, tb)

    sys.excepthook = biosnn_excepthook
