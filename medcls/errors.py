"""Exceptions raised for user errors.

Every user-facing error derives from :class:`MedclsError`. The CLI prints such an
error as one line (no traceback), so the message must say *what* was wrong
(the file, the field, the argument) and *what was expected*.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "MedclsError", "ModelError"]


class MedclsError(Exception):
    """Base class of the errors a user can cause and fix."""


class ConfigError(MedclsError):
    """An invalid experiment configuration (unknown key, wrong type, missing value)."""


class DataError(MedclsError):
    """An unreadable or invalid input file, manifest, label or case.

    Args:
        message: what is wrong and what was expected.
        path: the offending file or folder, if there is one; it is put first in the
            message so that one line names the file.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ModelError(MedclsError):
    """An unknown model name or arguments a model cannot honour."""


class CheckpointError(MedclsError):
    """A checkpoint that is missing, corrupt, or refused as unsafe."""
