"""Errors the user sees: each says what is wrong and, where there is one, which file."""
from __future__ import annotations


class HypernetworkError(ValueError):
    """A hypernetwork that cannot be built, read or applied. ``str()`` names the file when known."""

    def __init__(self, message: str, path=None):
        self.message = message
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def with_path(self, path) -> "HypernetworkError":
        """The same error, naming ``path`` (when it named no file yet)."""
        if self.path is not None:
            return self
        err = type(self)(self.message, path)
        err.__cause__ = self.__cause__
        return err


class UnsafeFileError(HypernetworkError):
    """A pickle that would run code or build objects other than plain containers and tensors."""


class NotAHypernetworkError(HypernetworkError):
    """A readable file of another kind: a checkpoint, a LoRA, an embedding."""


class ModelError(RuntimeError):
    """A checkpoint that cannot be found, recognised or loaded."""
