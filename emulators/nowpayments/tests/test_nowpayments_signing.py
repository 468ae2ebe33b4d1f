"""The provider's wire form: JSON.stringify text of a key-sorted object, HMAC-SHA512 signed."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal

import pytest
from nowpayments_emulator.signing import dumps_js, encode_ipn, js_number, js_string, sign


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.000002"), "0.000002"),
        (0.000002, "0.000002"),
        (1e-7, "1e-7"),
        (Decimal("1E-7"), "1e-7"),
        (1.5e-7, "1.5e-7"),
        (Decimal("0.00001444"), "0.00001444"),
        (1e21, "1e+21"),
        (10**21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012, "123456789012"),
        (5_000_000_123, "5000000123"),
        (2**60, "1152921504606847000"),
        (69.25, "69.25"),
        (Decimal("69.250"), "69.25"),
        (Decimal("100.00"), "100"),
        (100.0, "100"),
        (-3.5, "-3.5"),
        (Decimal("-0.000001"), "-0.000001"),
        (-1e-7, "-1e-7"),
        (0, "0"),
        (-0.0, "0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1.23e-18, "1.23e-18"),
        (float("nan"), "null"),
        (float("inf"), "null"),
    ],
)
def test_numbers_render_as_javascript_does(value: int | float | Decimal, expected: str) -> None:
    assert js_number(value) == expected
    assert dumps_js({"n": value}) == '{"n":' + expected + "}"


def test_strings_escape_only_what_json_stringify_escapes() -> None:
    assert js_string("Ключ — 🎮 é") == '"Ключ — 🎮 é"'
    assert js_string("https://shop.example/a/b") == '"https://shop.example/a/b"'
    assert js_string('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    assert js_string("\b\t\n\f\r") == '"\\b\\t\\n\\f\\r"'
    assert js_string("\x01\x1f\x7f") == '"\\u0001\\u001f\x7f"'
    assert js_string("\u2028") == '"\u2028"'
    assert js_string("lone \ud800") == '"lone \\ud800"'


def test_keys_sorted_at_every_level_and_compact() -> None:
    value = {
        "b": {"d": 1, "c": [{"z": 1, "a": Decimal("0.000002")}, None, True]},
        "a": "x/y",
    }
    assert dumps_js(value) == '{"a":"x/y","b":{"c":[{"a":0.000002,"z":1},null,true],"d":1}}'


def test_keys_follow_javascript_object_order() -> None:
    # JS objects enumerate integer-like keys first, ascending, whatever order they were added in.
    assert dumps_js({"b": 1, "10": 2, "9": 3}) == '{"9":3,"10":2,"b":1}'
    # Array.prototype.sort compares UTF-16 code units: the astral 😀 (0xD83D…) sorts before U+FFFF.
    assert dumps_js({"\uffff": 1, "😀": 2}) == '{"😀":2,"\uffff":1}'


def test_output_parses_back_to_the_same_value() -> None:
    value = {"payment_id": 5_000_000_123, "amount": "0.1", "nested": {"list": [1, 2.5, "é"]}}
    assert json.loads(dumps_js(value)) == value


def test_ipn_encoding_differs_from_python_json_dumps() -> None:
    # The reason this module exists: a merchant re-serialising with json.dumps would not match.
    body = {"pay_amount": 0.00001444, "order_description": "Ключ/key"}
    raw = encode_ipn(body)
    assert raw == '{"order_description":"Ключ/key","pay_amount":0.00001444}'.encode()
    assert json.dumps(body, sort_keys=True, separators=(",", ":")).encode() != raw


def test_signature_is_hmac_sha512_hex_over_raw_bytes() -> None:
    raw = encode_ipn({"b": 1, "a": "é"})
    secret = "s3cret-ключ"
    expected = hmac.new(secret.encode("utf-8"), raw, hashlib.sha512).hexdigest()
    assert sign(raw, secret) == expected
    assert sign(raw, secret) == sign(raw, secret).lower()
    assert len(sign(raw, secret)) == 128


def test_unsupported_types_are_refused() -> None:
    with pytest.raises(TypeError):
        dumps_js({"x": object()})
    with pytest.raises(TypeError):
        js_number(True)
