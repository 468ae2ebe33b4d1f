"""Reading a verified IPN: fields, amounts as Decimal, dedup keys, and the rejection flood cap."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import webhooks_testkit as kit
from shared.contracts.webhooks import IpnReceived
from webhooks.domain import FailureBudget, read_ipn, storable_headers
from webhooks.errors import IpnRejectedError
from webhooks.repository import FAILURE_SQL, WAKE_SQL, ingest_sql, stage_event
from webhooks.service import received_event


def test_fields_are_text_ids_and_decimal_amounts():
    body = kit.ipn(payment_id=5261148849123, actually_paid=0.000002, price_amount=59.99)
    fields = read_ipn(kit.encode(body))
    assert fields.payment_id == "5261148849123"
    assert fields.invoice_id == "4522625843"
    assert fields.actually_paid == Decimal("0.000002")
    assert fields.price_amount == Decimal("59.99")
    assert fields.outcome_amount == Decimal("0.0011885")
    assert fields.updated_at == 1732626000000
    assert fields.document["fee"]["depositFee"] == "0.000002"  # nested numbers stay text


def test_fixture_shapes_read_and_give_distinct_dedup_keys():
    data = kit.shapes()
    waiting, finished = (read_ipn(raw.encode()) for raw in data["raw"])
    assert (waiting.payment_status, finished.payment_status) == ("waiting", "finished")
    assert waiting.payment_id == finished.payment_id == "5261148849"
    assert finished.actually_paid == Decimal("69.25")
    assert waiting.dedup_key != finished.dedup_key
    assert finished.dedup_key == "nowpayments:5261148849:finished:69.25:1698697946468"


def test_dedup_key_ignores_amount_spelling_but_not_amount_or_time():
    base = read_ipn(b'{"payment_id":1,"payment_status":"waiting","actually_paid":"69.250"}')
    same = read_ipn(b'{"payment_id":1,"payment_status":"waiting","actually_paid":69.25}')
    more = read_ipn(b'{"payment_id":1,"payment_status":"waiting","actually_paid":69.26}')
    later = read_ipn(
        b'{"payment_id":1,"payment_status":"waiting","actually_paid":69.25,"updated_at":2}'
    )
    assert base.dedup_key == same.dedup_key
    assert len({base.dedup_key, more.dedup_key, later.dedup_key}) == 3


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"payment_status": None}, "payment_status"),
        ({"payment_status": "fin ished"}, "payment_status"),
        ({"payment_id": None}, "payment_id"),
        ({"payment_id": 1.5}, "payment_id"),
        ({"payment_id": "x" * 65}, "payment_id"),
        ({"actually_paid": "lots"}, "actually_paid"),
        ({"actually_paid": -1}, "actually_paid"),
        ({"actually_paid": "1e-1000"}, "actually_paid"),
        ({"actually_paid": "1e+40"}, "actually_paid"),
        ({"outcome_amount": "0e999999999"}, "outcome_amount"),
        ({"price_amount": True}, "price_amount"),
        ({"pay_amount": {"v": 1}}, "pay_amount"),
        ({"updated_at": 1.5}, "updated_at"),
        ({"order_id": "a\u0000b"}, "order_id"),
        ({"order_id": "o" * 101}, "order_id"),
        ({"price_currency": "us d"}, "price_currency"),
    ],
)
def test_bad_fields_are_named(patch, field):
    with pytest.raises(IpnRejectedError) as info:
        read_ipn(kit.encode(kit.ipn(**patch)))
    assert info.value.reason == "invalid_payload"
    assert info.value.detail.startswith(f"{field}:")


@pytest.mark.parametrize("body", [b"not json", b"\xff{}", b'{"a":1,"a":2}', b"[" * 3000])
def test_signed_but_unreadable_body_is_invalid_json(body):
    with pytest.raises(IpnRejectedError) as info:
        read_ipn(body)
    assert info.value.reason == "invalid_json"


def test_json_that_is_not_an_object_is_invalid_payload():
    with pytest.raises(IpnRejectedError) as info:
        read_ipn(b"[1,2]")
    assert info.value.reason == "invalid_payload"


def test_staged_event_splices_the_row_id_into_exactly_the_envelope_field():
    # A payload key with the same name must not be the one replaced.
    body = kit.ipn(webhook_log_id=0)
    raw = kit.encode(body)
    fields = read_ipn(raw)
    event = received_event(
        fields,
        log_id=0,
        raw_body=raw.decode(),
        headers={"user-agent": "t"},
        received_at=IpnReceived.model_fields["occurred_at"].default_factory(),  # type: ignore[misc]
        correlation_id="corr-1",
    )
    staged = stage_event(event, "webhook_log_id")
    payload = staged.head + b"12345" + staged.tail
    decoded = IpnReceived.model_validate_json(payload)
    assert decoded.webhook_log_id == 12345
    assert decoded.payload["webhook_log_id"] == "0"
    assert decoded.actually_paid == Decimal("0.0012")
    assert json.loads(payload)["actually_paid"] == "0.0012"  # amounts travel as strings
    assert decoded.correlation_id == "corr-1"
    assert json.loads(staged.headers_json)["Nats-Msg-Id"] == str(event.event_id)


def test_received_event_is_a_complete_model_equal_to_a_validated_one():
    # received_event assembles the instance without validation; it must be exactly what
    # validating the same values gives, with every field of the contract set.
    raw = kit.encode(kit.ipn())
    event = received_event(
        read_ipn(raw),
        log_id=7,
        raw_body=raw.decode(),
        headers={"user-agent": "t"},
        received_at=IpnReceived.model_fields["occurred_at"].default_factory(),  # type: ignore[misc]
        correlation_id=None,
    )
    assert set(event.__dict__) == set(IpnReceived.model_fields)
    assert event.model_fields_set == set(IpnReceived.model_fields)
    validated = IpnReceived.model_validate(event.model_dump())
    assert validated == IpnReceived.model_validate_json(event.model_dump_json())
    assert validated.model_dump() == event.model_dump()
    assert event.correlation_id == str(event.event_id)  # no incoming id: a new chain


@pytest.mark.parametrize("correlation", ["corr-1", "a:b.c_d", 'quote"and\\back', "ключ"])
def test_staged_headers_are_the_json_of_the_envelope_headers(correlation):
    raw = kit.encode(kit.ipn())
    event = received_event(
        read_ipn(raw),
        log_id=0,
        raw_body=raw.decode(),
        headers={},
        received_at=IpnReceived.model_fields["occurred_at"].default_factory(),  # type: ignore[misc]
        correlation_id=correlation,
    )
    staged = stage_event(event, "webhook_log_id")
    assert json.loads(staged.headers_json) == {
        "Nats-Msg-Id": str(event.event_id),
        "X-Correlation-ID": correlation,
        "Content-Type": "application/json",
    }


def test_failure_budget_caps_per_minute_and_reports_what_it_dropped():
    now = [0.0]
    budget = FailureBudget(per_minute=2, clock=lambda: now[0])
    assert budget.take() == 0
    assert budget.take() == 0
    assert budget.take() is None
    assert budget.take() is None
    now[0] = 61.0
    assert budget.take() == 2  # the next stored row reports the two dropped
    budget.give_back(2)  # ... but it could not be stored either
    assert budget.dropped == 3
    assert budget.take() == 3
    assert FailureBudget(per_minute=0).take() is None


def test_stored_headers_are_bounded_redacted_and_safe_for_postgres():
    headers = [
        (b"x", b"a\x00b" + b"z" * 5000),
        (b"n\x00", b"v"),
        (b"authorization", b"Bearer secret"),
        (b"x-api-key", b"k"),
        (b"user-agent", b"caf\xe9"),
        *((f"h{i}".encode(), b"v") for i in range(80)),
    ]
    stored = storable_headers(headers)
    assert len(stored) == 50
    assert stored["x"] == "a\ufffdb" + "z" * 997
    assert stored["n\ufffd"] == "v"
    assert stored["authorization"] == stored["x-api-key"] == "[redacted]"
    assert stored["user-agent"] == "caf\u00e9"
    assert all("\u0000" not in k + v and len(v) <= 1000 for k, v in stored.items())


def test_ingest_statements_never_notify_inside_the_ingest_transaction():
    # A NOTIFY inside them would take the notify-queue lock through every commit's WAL flush
    # and serialise all IPN commits (see the repository docstring for the measurement).
    assert "pg_notify" not in ingest_sql(1) and "pg_notify" not in ingest_sql(3)
    assert "pg_notify" not in FAILURE_SQL
    assert "pg_notify" in WAKE_SQL and "synchronous_commit" in WAKE_SQL
