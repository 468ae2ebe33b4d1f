"""A local stand-in for NOWPayments: its REST API, its hosted invoice page and its signed IPNs.

It imports nothing from the rest of BitLoot on purpose: it plays the outside party, so its
serialiser and signature are a second, independent implementation that cross-checks ours.
The app factory is `nowpayments_emulator.app:create_app`.
"""

from .config import EmulatorConfig

__all__ = ["EmulatorConfig"]
