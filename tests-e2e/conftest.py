"""Whole-system tests: real processes started by the same launcher as ``make dev``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.testing.stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with running_stack() as s:
        yield s
