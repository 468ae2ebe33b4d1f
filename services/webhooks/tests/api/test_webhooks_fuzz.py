"""Fuzz the endpoint: no input yields a 500, and nothing is stored (or staged for publishing)
without a signature that the tests' own signer made over that content."""

from __future__ import annotations

import json
import random

import webhooks_testkit as kit
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from shared.contracts.webhooks import IpnReceived

STATUSES = ["waiting", "confirming", "confirmed", "finished", "partially_paid", "failed"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
ipn_like = st.fixed_dictionaries(
    {
        "payment_id": st.one_of(st.integers(0, 2**53 - 1), st.text(max_size=70), scalars),
        "payment_status": st.one_of(st.sampled_from(STATUSES), st.text(max_size=40), scalars),
    },
    optional={
        "actually_paid": st.one_of(scalars, st.decimals(allow_nan=False).map(str)),
        "price_amount": scalars,
        "invoice_id": st.one_of(st.integers(0, 2**53 - 1), scalars),
        "order_id": st.one_of(st.text(max_size=120), scalars),
        "order_description": st.text(max_size=60),
        "updated_at": st.one_of(st.integers(0, 2**53 - 1), scalars),
        "pay_currency": st.one_of(st.sampled_from(["btc", "usdttrc20"]), scalars),
        "fee": json_values,
    },
)
amounts = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.decimals(min_value=0, max_value=10**6, places=8, allow_nan=False).map(str),
    st.integers(0, 10**9),
)
valid_ipn = st.fixed_dictionaries(
    {
        "payment_id": st.integers(0, 2**53 - 1),
        "payment_status": st.sampled_from(STATUSES),
        "actually_paid": amounts,
        "price_amount": amounts,
        "updated_at": st.integers(0, 2**53 - 1),
        "order_description": st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
    },
    optional={
        "invoice_id": st.integers(0, 2**53 - 1),
        "order_id": st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True),
        "fee": json_values,
    },
)
bodies = st.one_of(
    valid_ipn.map(lambda body: ("ipn", body)),
    st.binary(max_size=400).map(lambda raw: ("bytes", raw)),
    ipn_like.map(lambda body: ("ipn", body)),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(lambda b: ("json", b)),
)
signings = st.sampled_from(
    ["raw", "previous", "shuffled", "wrong_secret", "none", "random_hex", "flip", "truncate"]
)


def _js_int(text: str) -> int | float:
    value = int(text)
    return value if abs(value) < 2**53 else float(value)


def accepted_by_oracle(raw: bytes, signature: str | None) -> bool:
    """What the tests consider validly signed: our signer over these bytes, or over the
    JSON.stringify form of their content (the provider's canonical form)."""
    if signature is None:
        return False
    candidates = {kit.sign(raw), kit.sign(raw, kit.PREVIOUS_SECRET)}
    try:
        # JavaScript parses every number as a double: integers past 2**53 included.
        canonical = kit.encode(json.loads(raw, parse_int=_js_int))
        candidates |= {kit.sign(canonical), kit.sign(canonical, kit.PREVIOUS_SECRET)}
    except (ValueError, TypeError, UnicodeError, RecursionError, AssertionError):
        pass
    return signature.strip().lower() in candidates


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, signing=signings, seed=st.integers(0, 2**16))
async def test_fuzzed_requests_never_500_and_never_store_unsigned_content(
    gateway, db, body, signing, seed
):
    kind, value = body
    rng = random.Random(seed)
    raw = value if kind == "bytes" else kit.encode(value)
    signature: str | None = kit.sign(raw)
    if signing == "previous":
        signature = kit.sign(raw, kit.PREVIOUS_SECRET)
    elif signing == "shuffled" and kind != "bytes":
        raw = kit.js_stringify(value, rng=rng).encode()
    elif signing == "wrong_secret":
        signature = kit.sign(raw, "wrong")
    elif signing == "none":
        signature = None
    elif signing == "random_hex":
        signature = rng.randbytes(64).hex()
    elif signing == "flip" and raw:
        i = rng.randrange(len(raw))
        raw = raw[:i] + bytes([raw[i] ^ (1 << rng.randrange(8))]) + raw[i + 1 :]
    elif signing == "truncate" and raw:
        raw = raw[: rng.randrange(len(raw))]

    response = await kit.post(gateway.client, raw, signature)

    assert response.status_code in (200, 400), (response.status_code, response.text)
    event(f"{response.status_code} {response.json().get('error', response.json().get('status'))}")
    if response.status_code == 200:
        assert accepted_by_oracle(raw, signature), raw
        if response.json()["status"] == "accepted":  # a duplicate keeps the first copy's bytes
            stored = await db.fetchval(
                "SELECT count(*) FROM webhooks.webhook_log WHERE raw_body = $1 AND signature = $2",
                raw,
                signature.strip().lower() if signature else None,
            )
            assert stored == 1
    else:
        assert response.json()["error"]


async def test_after_fuzzing_every_staged_event_belongs_to_a_validly_signed_row(gateway, db):
    # A deterministic mixed batch, then the invariant over everything the database holds.
    good = kit.ipn()
    await kit.post_signed(gateway.client, good)
    await kit.post(gateway.client, kit.encode(kit.ipn()), kit.sign(b"other"))
    await kit.post(gateway.client, b"\x00\xff", kit.sign(b"\x00\xff"))
    rows = await db.fetch("SELECT id, raw_body, signature, event_id FROM webhooks.webhook_log")
    events = await db.fetch(
        "SELECT payload FROM webhooks.outbox WHERE subject = $1", IpnReceived.SUBJECT
    )
    assert len(rows) == len(events) == 1
    by_id = {r["id"]: r for r in rows}
    for record in events:
        event = IpnReceived.model_validate_json(record["payload"])
        row = by_id[event.webhook_log_id]
        assert accepted_by_oracle(row["raw_body"], row["signature"])
        assert event.event_id == row["event_id"]
