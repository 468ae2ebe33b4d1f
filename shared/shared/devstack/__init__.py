"""Embedded infrastructure for development and tests: no Docker, everything from wheels."""
