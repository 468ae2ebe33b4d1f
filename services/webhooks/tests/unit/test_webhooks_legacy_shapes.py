"""Older documented IPN shapes and re-printed bodies, pure.

Every body here is signed by the test itself: the provider's documented recipe (keys sorted,
``JSON.stringify``) through the tests' own serialiser (``webhooks_testkit.js_stringify``) and
``hmac`` — never by the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import webhooks_testkit as kit
from webhooks.domain import js_number_text, read_ipn, verify_signature
from webhooks.errors import IpnRejectedError

KEYS = (kit.SECRET.encode(), kit.PREVIOUS_SECRET.encode())
UPDATED_MS = 1698697946468


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def provider_signature(body: dict[str, Any], secret: str = kit.SECRET) -> str:
    """HMAC-SHA512 of JSON.stringify(params, Object.keys(params).sort()), as documented."""
    signed = kit.js_stringify(body).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha512).hexdigest()


def legacy_body(**overrides: Any) -> dict[str, Any]:
    """The 2023 invoice-flow shape: insertion order, no fee object, ISO updated_at."""
    body: dict[str, Any] = {
        "payment_id": 5261148849,
        "parent_payment_id": None,
        "invoice_id": 6417549628,
        "payment_status": "finished",
        "pay_address": "TDbqd96NNmXmNQCCbdohbvDnDZHcZy1GGJ",
        "payin_extra_id": None,
        "price_amount": 5,
        "price_currency": "usd",
        "pay_amount": 69.242455,
        "actually_paid": 69.25,
        "actually_paid_at_fiat": 0,
        "pay_currency": "trx",
        "order_id": "1",
        "order_description": "Pay for services — Ключ/🎮",
        "purchase_id": "5931000544",
        "updated_at": iso(UPDATED_MS),
        "outcome_amount": 0.000002,
        "outcome_currency": "usdttrc20",
        "payment_extra_ids": None,
    }
    body.update(overrides)
    return body


def as_arrived(body: dict[str, Any]) -> bytes:
    """Unsorted, as the older IPNs came (JS number text, non-ASCII and '/' as they are)."""
    return kit.js_stringify(body, sort=False).encode("utf-8")


def test_legacy_shape_verifies_canonically_and_reads_iso_time_as_epoch_ms():
    body = legacy_body()
    raw = as_arrived(body)
    assert raw != kit.js_stringify(body).encode()  # not in the signed (sorted) order
    verified = verify_signature(raw, provider_signature(body), KEYS)
    assert (verified.method, verified.secret) == ("canonical", "current")
    fields = read_ipn(raw, verified.document)
    assert fields.updated_at == UPDATED_MS
    assert str(fields.actually_paid) == "69.25"
    assert fields.document["updated_at"] == iso(UPDATED_MS)  # the payload keeps the text


def test_one_ipn_has_one_dedup_key_in_either_shape():
    current = dict(legacy_body(), updated_at=UPDATED_MS)
    current["fee"] = {"currency": "trx", "depositFee": 0.1, "serviceFee": 0, "withdrawalFee": 0}
    current_raw = kit.encode(current)
    assert verify_signature(current_raw, provider_signature(current), KEYS).method == "raw"
    legacy = legacy_body()
    legacy_raw = as_arrived(legacy)
    legacy_verified = verify_signature(legacy_raw, provider_signature(legacy), KEYS)
    assert (
        read_ipn(current_raw).dedup_key == read_ipn(legacy_raw, legacy_verified.document).dedup_key
    )
    assert read_ipn(current_raw).dedup_key == (
        f"nowpayments:5261148849:finished:69.25:{UPDATED_MS}"
    )


def test_body_reprinted_by_python_or_php_still_verifies():
    body = legacy_body()
    signature = provider_signature(body)
    # Python's json.dumps: 2e-06 for 0.000002, ", " separators, non-ASCII as \u escapes.
    python = json.dumps(body).encode()
    assert b"2e-06" in python and b"\\u041a" in python
    assert verify_signature(python, signature, KEYS).method == "canonical"
    # PHP's json_encode escapes '/' as '\/'; a pretty-printer adds newlines.
    php = json.dumps(body, indent=2).replace("/", "\\/").encode()
    assert verify_signature(php, signature, KEYS).method == "canonical"
    # Numbers written with other spellings of the same value.
    respelled = (
        as_arrived(body)
        .replace(b"69.25,", b"69.250,")
        .replace(b'"price_amount":5,', b'"price_amount":5.0,')
    )
    assert b"69.250" in respelled and b"5.0" in respelled
    assert verify_signature(respelled, signature, KEYS).method == "canonical"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"actually_paid":69.25', b'"actually_paid":69.26'),  # the amount
        (b'"payment_status":"finished"', b'"payment_status":"finisheD"'),
        (b'"updated_at":"2023-10-30T20:32:26.468Z"', b'"updated_at":"2023-10-30T20:32:26.469Z"'),
        (b'"order_id":"1"', b'"order_id":1'),  # a string turned into a number
        (b'"payment_extra_ids":null', b'"payment_extra_ids":null,"extra":1'),
    ],
)
def test_tampered_legacy_body_is_refused(old: bytes, new: bytes):
    body = legacy_body()
    raw = as_arrived(body)
    assert old in raw
    with pytest.raises(IpnRejectedError) as info:
        verify_signature(raw.replace(old, new), provider_signature(body), KEYS)
    assert info.value.reason == "invalid_signature"


def test_digits_a_double_would_round_away_cannot_be_changed_in_transit():
    # JS holds 5261148849000000001 as the double 5261148849000000000; a body claiming a
    # neighbouring value must not verify against the one the provider signed.
    body = {"payment_id": 1, "payment_status": "waiting", "big": 5261148849e9}  # a double
    signature = provider_signature(body)
    raw = kit.js_stringify(body, sort=False).encode()
    assert verify_signature(raw, signature, KEYS).method == "canonical"
    tampered = raw.replace(b"5261148849000000000", b"5261148849000000001")
    with pytest.raises(IpnRejectedError):
        verify_signature(tampered, signature, KEYS)


@pytest.mark.parametrize(
    ("literal", "js"),
    [
        ("0.000002", "0.000002"),
        ("2e-06", "0.000002"),
        ("1E-7", "1e-7"),
        ("1e21", "1e+21"),
        ("69.250", "69.25"),
        ("5.0", "5"),
        ("-0", "0"),
        ("100", "100"),
        ("5261148849000000001", "5261148849000000001"),  # not the double's value: kept
        ("1e400", "1e400"),  # JS would print null: kept
    ],
)
def test_number_text_is_javascripts_when_the_value_is_the_same(literal: str, js: str):
    assert js_number_text(literal) == js


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2023-10-30T20:32:26.468Z", UPDATED_MS),
        ("2023-10-30T20:32:26.468+00:00", UPDATED_MS),
        ("2023-10-30T21:32:26.468+01:00", UPDATED_MS),
        ("2023-10-30 20:32:26.468123Z", UPDATED_MS),
        ("2023-10-30T20:32:26Z", UPDATED_MS - 468),
        ("2023-10-30T20:32:26.468", UPDATED_MS),  # no zone: the provider's times are UTC
    ],
)
def test_iso_updated_at_becomes_epoch_milliseconds(text: str, ms: int):
    raw = kit.encode(kit.ipn(updated_at=text))
    assert read_ipn(raw).updated_at == ms


@pytest.mark.parametrize("text", ["yesterday", "2023-13-40T99:00:00Z", "1969-12-31T23:59:59Z"])
def test_unreadable_updated_at_is_named(text: str):
    with pytest.raises(IpnRejectedError) as info:
        read_ipn(kit.encode(kit.ipn(updated_at=text)))
    assert info.value.reason == "invalid_payload"
    assert info.value.detail.startswith("updated_at:")


def test_fee_object_is_optional():
    body = kit.ipn()
    del body["fee"]
    assert read_ipn(kit.encode(body)).payment_status == "finished"
