"""Skips that CI turns into failures: a CI machine must have what the suite needs."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require(condition: object, reason: str) -> None:
    """Skip with ``reason`` unless ``condition``; under CI=true, fail instead."""
    if condition:
        return
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
