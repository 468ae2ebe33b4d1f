"""Tables of the fulfillment schema. No other service reads or writes them."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db import make_metadata
from shared.messaging import InboxMixin, OutboxMixin

SCHEMA = "fulfillment"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


class Outbox(OutboxMixin, Base):
    __tablename__ = "outbox"


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"
