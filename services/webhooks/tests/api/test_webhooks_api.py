"""The IPN endpoint in-process against the real PostgreSQL: what is answered, what is stored."""

from __future__ import annotations

import asyncio
import json
import random
from decimal import Decimal

import pytest
import webhooks_testkit as kit
from shared.contracts.webhooks import IpnReceived, IpnRejected
from shared.settings import SecretNotConfiguredError
from shared.testing import free_port
from webhooks.domain import FailureBudget
from webhooks.main import build, create_api


async def outbox(db, subject: str) -> list[dict]:
    rows = await db.fetch(
        "SELECT payload FROM webhooks.outbox WHERE subject = $1 ORDER BY id", subject
    )
    return [json.loads(r["payload"]) for r in rows]


async def log_rows(db) -> list:
    return await db.fetch("SELECT * FROM webhooks.webhook_log ORDER BY id")


async def failures(db) -> list:
    return await db.fetch("SELECT * FROM webhooks.webhook_failure ORDER BY id")


async def test_valid_ipn_is_stored_once_with_its_event(gateway, db):
    body = kit.ipn(payment_id=5261148849, actually_paid=0.0012)
    raw = kit.encode(body)
    response = await kit.post(
        gateway.client,
        raw,
        kit.sign(raw),
        headers={"authorization": "Bearer top-secret", "x-correlation-id": "corr-abc"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted"}

    [row] = await log_rows(db)
    assert row["raw_body"] == raw
    assert row["dedup_key"] == "nowpayments:5261148849:finished:0.0012:1732626000000"
    assert (row["payment_id"], row["invoice_id"], row["order_id"]) == (
        "5261148849",
        "4522625843",
        "ord_7d3f2c",
    )
    assert row["payment_status"] == "finished"
    assert row["actually_paid"] == Decimal("0.0012")
    assert row["received_count"] == 1
    assert row["verified_by"] == "raw/current"
    assert row["signature"] == kit.sign(raw)
    assert row["source_ip"] == "203.0.113.7"
    stored_headers = json.loads(row["headers"])
    assert stored_headers["authorization"] == "[redacted]"
    assert "top-secret" not in row["headers"]

    [payload] = await outbox(db, IpnReceived.SUBJECT)
    event = IpnReceived.model_validate(payload)
    assert event.event_id == row["event_id"]
    assert event.webhook_log_id == row["id"]
    assert event.correlation_id == "corr-abc"
    assert event.payment_id == "5261148849" and event.invoice_id == "4522625843"
    assert payload["actually_paid"] == "0.0012" and payload["price_amount"] == "59.99"
    assert event.raw_body == raw.decode()
    assert event.headers["authorization"] == "[redacted]"
    assert event.replay is False
    assert await failures(db) == []


async def test_alias_path_is_the_same_endpoint(gateway, db):
    response = await kit.post_signed(gateway.client, kit.ipn(), path=kit.ALIAS_PATH)
    assert response.status_code == 200
    assert len(await log_rows(db)) == 1


async def test_keys_shuffled_small_floats_and_non_ascii_are_accepted_canonically(gateway, db):
    body = kit.ipn(actually_paid=0.000002, order_description="Ключ игры — 🎮 café/naïve")
    signature = kit.sign(kit.encode(body))
    shuffled = kit.js_stringify(body, rng=random.Random(11)).encode()
    response = await kit.post(gateway.client, shuffled, signature)
    assert response.status_code == 200, response.text
    [row] = await log_rows(db)
    assert row["verified_by"] == "canonical/current"
    assert row["raw_body"] == shuffled  # stored exactly as received
    [payload] = await outbox(db, IpnReceived.SUBJECT)
    assert payload["actually_paid"] == "0.000002"
    assert payload["payload"]["order_description"] == "Ключ игры — 🎮 café/naïve"
    assert payload["payload"]["fee"]["depositFee"] == "0.000002"


async def test_fixture_shapes_are_accepted(gateway, db):
    data = kit.shapes()
    for body in data["bodies"]:
        response = await kit.post_signed(gateway.client, body)
        assert response.status_code == 200, response.text
    events = [IpnReceived.model_validate(p) for p in await outbox(db, IpnReceived.SUBJECT)]
    assert [e.payment_status for e in events] == ["waiting", "finished"]
    assert events[1].actually_paid == Decimal("69.25")


async def test_rotation_secret_is_accepted(gateway, db):
    response = await kit.post_signed(gateway.client, kit.ipn(), secret=kit.PREVIOUS_SECRET)
    assert response.status_code == 200
    [row] = await log_rows(db)
    assert row["verified_by"] == "raw/previous"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("flipped_byte", "invalid_signature"),
        ("wrong_secret", "invalid_signature"),
        ("missing_header", "missing_signature"),
        ("malformed_header", "malformed_signature"),
        ("invalid_json", "invalid_json"),
        ("bad_field", "invalid_payload"),
    ],
)
async def test_rejections_are_400_store_a_failure_and_publish_nothing_received(
    gateway, db, case, reason
):
    raw = kit.encode(kit.ipn())
    signature: str | None = kit.sign(raw)
    if case == "flipped_byte":
        i = raw.index(b"finished")
        raw = raw[:i] + b"F" + raw[i + 1 :]
    elif case == "wrong_secret":
        signature = kit.sign(raw, "not-the-secret")
    elif case == "missing_header":
        signature = None
    elif case == "malformed_header":
        signature = "deadbeef"
    elif case == "invalid_json":
        raw = b'{"payment_id": 1, "payment_status": '
        signature = kit.sign(raw)
    elif case == "bad_field":
        raw = kit.encode(kit.ipn(actually_paid="a lot"))
        signature = kit.sign(raw)

    response = await kit.post(gateway.client, raw, signature, headers={"cookie": "session=hunter2"})
    assert response.status_code == 400
    problem = response.json()
    assert problem["error"] == reason
    assert problem["detail"]
    if case == "missing_header":
        assert "x-nowpayments-sig" in problem["detail"]
    if case == "bad_field":
        assert problem["detail"].startswith("actually_paid:")
    assert kit.SECRET not in response.text

    assert await log_rows(db) == []
    assert await outbox(db, IpnReceived.SUBJECT) == []
    [failure] = await failures(db)
    assert failure["reason"] == reason
    assert failure["body_excerpt"] == raw[:2048]
    assert failure["source_ip"] == "203.0.113.7"
    assert json.loads(failure["headers"])["cookie"] == "[redacted]"
    [rejected] = await outbox(db, IpnRejected.SUBJECT)
    event = IpnRejected.model_validate(rejected)
    assert (event.failure_id, event.reason) == (failure["id"], reason)


async def test_oversized_by_content_length_is_413_without_reading(gateway, db):
    raw = b'{"x":"' + b"a" * (64 * 1024) + b'"}'
    response = await kit.post(gateway.client, raw, kit.sign(raw))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert await log_rows(db) == []
    [failure] = await failures(db)
    assert failure["reason"] == "body_too_large" and failure["body_size"] == len(raw)


async def test_oversized_streamed_body_without_length_is_cut_off_at_the_cap(gateway, db):
    chunks_sent = 0

    async def stream():
        nonlocal chunks_sent
        for _ in range(100):  # 100 x 8 KiB: far more than the cap
            chunks_sent += 1
            yield b"a" * 8192

    response = await gateway.client.post(
        kit.IPN_PATH, content=stream(), headers={kit.SIG: "ab" * 64}
    )
    assert response.status_code == 413
    [failure] = await failures(db)
    assert failure["reason"] == "body_too_large"
    assert len(failure["body_excerpt"]) <= 2048


async def test_body_at_the_cap_is_read(gateway, db):
    body = kit.ipn(order_description="x")
    filler = 64 * 1024 - len(kit.encode(body))
    body["order_description"] = "x" * (filler + 1)
    raw = kit.encode(body)
    assert len(raw) == 64 * 1024
    response = await kit.post(gateway.client, raw, kit.sign(raw))
    assert response.status_code == 200


async def test_duplicate_counts_and_publishes_nothing_new(gateway, db):
    body = kit.ipn()
    first = await kit.post_signed(gateway.client, body)
    again = await kit.post_signed(gateway.client, body)
    assert (first.json(), again.json()) == ({"status": "accepted"}, {"status": "duplicate"})
    [row] = await log_rows(db)
    assert row["received_count"] == 2
    assert row["last_received_at"] > row["received_at"]
    assert len(await outbox(db, IpnReceived.SUBJECT)) == 1


async def test_100_concurrent_deliveries_make_one_row_and_one_event(gateway, db):
    raw = kit.encode(kit.ipn())
    signature = kit.sign(raw)
    responses = await asyncio.gather(
        *(kit.post(gateway.client, raw, signature) for _ in range(100))
    )
    assert [r.status_code for r in responses] == [200] * 100
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 99
    [row] = await log_rows(db)
    assert row["received_count"] == 100
    [event] = await outbox(db, IpnReceived.SUBJECT)
    assert event["event_id"] == str(row["event_id"])


async def test_distinct_statuses_of_one_payment_are_distinct_events(gateway, db):
    for status, paid, stamp in [
        ("waiting", 0, 1),
        ("confirming", 0.0012, 2),
        ("confirmed", 0.0012, 3),
        ("finished", 0.0012, 4),
    ]:
        body = kit.ipn(payment_id=42, payment_status=status, actually_paid=paid, updated_at=stamp)
        assert (await kit.post_signed(gateway.client, body)).status_code == 200
    events = [IpnReceived.model_validate(p) for p in await outbox(db, IpnReceived.SUBJECT)]
    assert [e.payment_status for e in events] == ["waiting", "confirming", "confirmed", "finished"]
    assert len({e.event_id for e in events}) == 4
    assert len({e.webhook_log_id for e in events}) == 4


async def test_other_methods_are_405(gateway):
    assert (await gateway.client.get(kit.IPN_PATH)).status_code == 405


async def test_flood_of_rejections_is_capped_and_the_drop_is_reported(gateway, db):
    now = [0.0]
    gateway.app.state.ipn.failure_budget = FailureBudget(3, clock=lambda: now[0])
    for i in range(8):
        response = await kit.post(gateway.client, f"junk {i}".encode(), "ab" * 64)
        assert response.status_code == 400  # every one is still answered
    assert len(await failures(db)) == 3
    now[0] = 60.0
    await kit.post(gateway.client, b"junk after", "ab" * 64)
    rows = await failures(db)
    assert len(rows) == 4
    assert rows[-1]["dropped_before"] == 5
    rejected = [IpnRejected.model_validate(p) for p in await outbox(db, IpnRejected.SUBJECT)]
    assert [e.dropped_since_last for e in rejected] == [0, 0, 0, 5]
    metrics = (await gateway.client.get("/metrics")).text
    assert "webhooks_rejections_dropped_total" in metrics


async def test_metrics_count_received_duplicates_and_rejections(gateway):
    def sample(text: str, name: str) -> float:
        # Unlabelled counters, or the invalid_signature child of the labelled one.
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(
                name + '{reason="invalid_signature"}'
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = (await gateway.client.get("/metrics")).text
    body = kit.ipn()
    await kit.post_signed(gateway.client, body)
    await kit.post_signed(gateway.client, body)
    await kit.post(gateway.client, b"{}", "ab" * 64)
    after = (await gateway.client.get("/metrics")).text
    for name, delta in [
        ("webhooks_ipn_received_total", 2),
        ("webhooks_ipn_duplicates_total", 1),
        ("webhooks_ipn_rejected_total", 1),
    ]:
        assert sample(after, name) - sample(before, name) == delta, name


async def test_ready_reports_the_database_only(gateway):
    response = await gateway.client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == ["database"]


async def test_database_down_answers_503_without_a_trace(webhooks_infra):
    closed = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    gw = await kit.open_gateway(kit.make_settings(webhooks_infra, database_url=closed))
    try:
        response = await kit.post_signed(gw.client, kit.ipn())
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json() == {
            "error": "unavailable",
            "detail": "storage is unavailable; retry later",
        }
        assert "Traceback" not in response.text
        # A forged request is still a 400, not a 503: rejection does not depend on storage.
        forged = await kit.post(gw.client, b"{}", "ab" * 64)
        assert forged.status_code == 400
        assert (await gw.client.get("/ready")).status_code == 503
    finally:
        await kit.close_gateway(gw)


async def test_connection_killed_under_the_pool_is_retried_transparently(gateway, db):
    assert (await kit.post_signed(gateway.client, kit.ipn())).status_code == 200
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'webhooks-api'"
    )
    assert killed >= 1
    response = await kit.post_signed(gateway.client, kit.ipn())
    assert response.status_code == 200
    assert len(await log_rows(db)) == 2


def test_missing_secret_fails_fast_naming_the_variable(infra):
    ctx = build(kit.make_settings(infra, ipn_secret=None))
    with pytest.raises(SecretNotConfiguredError, match="NOWPAYMENTS_IPN_SECRET"):
        create_api(ctx)
    ctx = build(kit.make_settings(infra, ipn_secret="changeme"))
    with pytest.raises(SecretNotConfiguredError, match="NOWPAYMENTS_IPN_SECRET"):
        create_api(ctx)


async def test_client_that_disconnects_mid_body_stores_nothing(gateway, db):
    app = gateway.app
    messages = [
        {"type": "http.request", "body": b'{"payment', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": kit.IPN_PATH,
        "raw_path": kit.IPN_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-nowpayments-sig", b"ab" * 64)],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    assert sent == []
    assert await log_rows(db) == [] and await failures(db) == []


async def test_unknown_path_is_404(gateway, db):
    response = await gateway.client.post("/webhooks/other", content=b"{}")
    assert response.status_code == 404
    assert await log_rows(db) == []


async def test_signed_body_with_an_escaped_lone_surrogate_is_400_not_500(gateway, db):
    raw = kit.encode(kit.ipn()).replace(b'"Game key"', b'"Game \\ud800 key"')
    response = await kit.post(gateway.client, raw, kit.sign(raw))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"
    assert await log_rows(db) == []
    [failure] = await failures(db)
    assert failure["body_excerpt"] == raw


async def test_openapi_documents_the_ipn_routes(gateway):
    schema = (await gateway.client.get("/openapi.json")).json()
    for path in (kit.IPN_PATH, kit.ALIAS_PATH):
        operation = schema["paths"][path]["post"]
        assert operation["parameters"][0]["name"] == "x-nowpayments-sig"
        assert set(operation["responses"]) == {"200", "400", "403", "413", "503"}
