"""Errors of the machine-learning subsystem: `ShoplakeError`s, so the CLI prints one red line."""

from __future__ import annotations

from shoplake.errors import DeterministicError, ModelNotFoundError

__all__ = ["LeakageError", "ModelNotFoundError"]


class LeakageError(DeterministicError):
    """A propensity feature could see the label window (or the future of its cutoff); never retried."""
