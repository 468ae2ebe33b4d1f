"""Test support: the pytest plugin (embedded infrastructure) and small async helpers."""

from shared.testing.helpers import free_port, wait_for

__all__ = ["free_port", "wait_for"]
