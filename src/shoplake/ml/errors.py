"""Errors of the machine-learning subsystem: `ShoplakeError`s, so the CLI prints one red line."""

from __future__ import annotations

from shoplake.errors import DeterministicError, ShoplakeError


class ModelNotFoundError(ShoplakeError):
    """A registered model, or its `champion` version, does not exist yet."""


class LeakageError(DeterministicError):
    """A propensity feature could see the label window (or the future of its cutoff); never retried."""
