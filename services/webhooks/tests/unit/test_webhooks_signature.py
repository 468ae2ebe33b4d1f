"""Signature rules, pure: raw bytes first, then the provider's canonical form, both secrets."""

from __future__ import annotations

import json
import random

import pytest
import webhooks_testkit as kit
from hypothesis import given, settings
from hypothesis import strategies as st
from webhooks.domain import (
    JsonNumber,
    canonical_json,
    js_key_order,
    parse_json_text,
    verify_signature,
)
from webhooks.errors import InvalidJsonError, IpnRejectedError

KEYS = (kit.SECRET.encode(), kit.PREVIOUS_SECRET.encode())


def reason_of(body: bytes, signature: str | None, keys=KEYS) -> str:
    with pytest.raises(IpnRejectedError) as info:
        verify_signature(body, signature, keys)
    return info.value.reason


def test_raw_body_signed_by_the_provider_verifies_without_parsing():
    raw = kit.encode(kit.ipn())
    verified = verify_signature(raw, kit.sign(raw), KEYS)
    assert (verified.method, verified.secret) == ("raw", "current")
    assert verified.document is None  # the hot path never parsed it


def test_uppercase_hex_and_surrounding_space_are_the_same_signature():
    raw = kit.encode(kit.ipn())
    assert verify_signature(raw, f"  {kit.sign(raw).upper()} ", KEYS).method == "raw"


def test_keys_shuffled_verify_through_the_canonical_form():
    body = kit.ipn(order_description="Ключ — 🎮 café/naïve", actually_paid=0.000002)
    raw = kit.encode(body)
    signature = kit.sign(raw)
    shuffled = kit.js_stringify(body, rng=random.Random(7)).encode()
    assert shuffled != raw
    verified = verify_signature(shuffled, signature, KEYS)
    assert (verified.method, verified.secret) == ("canonical", "current")
    assert verified.document is not None
    assert verified.document["actually_paid"] == "0.000002"


def test_whitespace_added_by_a_proxy_still_verifies_canonically():
    body = kit.ipn()
    raw = kit.encode(body)
    pretty = raw.replace(b",", b",\n  ").replace(b":", b": ")  # no ',' or ':' inside strings
    assert pretty != raw
    assert verify_signature(pretty, kit.sign(raw), KEYS).method == "canonical"


def test_small_floats_and_non_ascii_keep_the_javascript_text():
    body = kit.ipn(
        actually_paid=0.000002,
        pay_amount=1e-7,
        price_amount=1e21,
        order_description="Игра «Ключ» — 日本語 / emoji 🎮\u2028",
    )
    raw = kit.encode(body)
    assert b"0.000002" in raw and b"1e-7" in raw and b"1e+21" in raw
    assert "Игра".encode() in raw and b"\\/" not in raw and b"\\u" not in raw
    # Re-serialising the parse reproduces the provider's bytes exactly.
    assert canonical_json(parse_json_text(raw.decode())) == raw
    # ... which Python's json.dumps does not (the provider's own Python snippet's bug).
    naive = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert naive != raw
    assert verify_signature(raw, kit.sign(raw), KEYS).method == "raw"


def test_fixture_shapes_verify_raw_and_shuffled():
    data = kit.shapes()
    for raw_text, body in zip(data["raw"], data["bodies"], strict=True):
        # The 2023 shape arrived in insertion order; the provider signed the sorted form.
        signed_form = kit.encode(body)
        signature = kit.sign(signed_form)
        assert verify_signature(signed_form, signature, KEYS).method == "raw"
        arrived = raw_text.encode()
        assert verify_signature(arrived, signature, KEYS).method == "canonical"


def test_one_flipped_byte_is_rejected():
    raw = kit.encode(kit.ipn())
    signature = kit.sign(raw)
    position = raw.index(b'"finished"') + 2
    flipped = raw[:position] + bytes([raw[position] ^ 0x01]) + raw[position + 1 :]
    assert reason_of(flipped, signature) == "invalid_signature"
    bad_sig = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert reason_of(raw, bad_sig) == "invalid_signature"


def test_wrong_secret_is_rejected():
    raw = kit.encode(kit.ipn())
    assert reason_of(raw, kit.sign(raw, "some-other-secret")) == "invalid_signature"


def test_previous_secret_is_accepted_during_rotation_only():
    raw = kit.encode(kit.ipn())
    signature = kit.sign(raw, kit.PREVIOUS_SECRET)
    assert verify_signature(raw, signature, KEYS).secret == "previous"
    assert reason_of(raw, signature, keys=KEYS[:1]) == "invalid_signature"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("abc", "malformed_signature"),
        ("zz" * 64, "malformed_signature"),
        ("00" * 65, "malformed_signature"),
    ],
)
def test_missing_or_malformed_header(header, reason):
    assert reason_of(kit.encode(kit.ipn()), header) == reason


def test_garbage_with_a_well_formed_signature_is_rejected_not_crashing():
    for body in (b"", b"not json", b"\xff\xfe", b"[" * 5000, b'{"a":NaN}', b'{"a":1,"a":2}'):
        assert reason_of(body, "ab" * 64) == "invalid_signature"


def test_parser_keeps_number_text_and_refuses_ambiguity():
    doc = parse_json_text('{"a":0.000002,"b":5261148849000000001,"c":1E-7,"d":-0}')
    assert doc == {"a": "0.000002", "b": "5261148849000000001", "c": "1E-7", "d": "-0"}
    assert all(type(v) is JsonNumber for v in doc.values())
    for bad in ('{"a":1,"a":1}', "[Infinity]", "[" * 100 + "]" * 100, "{", ""):
        with pytest.raises(InvalidJsonError):
            parse_json_text(bad)


def test_javascript_key_order_puts_integer_keys_first_and_sorts_by_utf16():
    assert js_key_order(["b", "10", "a", "2", "\U0001f600", "\uff61"]) == [
        "2",
        "10",
        "a",
        "b",
        "\U0001f600",  # a surrogate pair (0xD83D...) sorts before U+FF61 in UTF-16
        "\uff61",
    ]


def test_canonical_escapes_like_json_stringify():
    doc = parse_json_text('{"s":"q\\"b\\\\/\\u0001\\n\\u007f\\u2028\\ud800x"}')
    assert canonical_json(doc) == '{"s":"q\\"b\\\\/\\u0001\\n\x7f\u2028\\ud800x"}'.encode()


def test_emulator_signed_body_verifies_with_our_verifier():
    from nowpayments_emulator import signing

    body = kit.ipn(actually_paid=0.000002, order_description="Ключ / 🎮 café")
    raw = signing.encode_ipn(body)
    signature = signing.sign(raw, kit.SECRET)
    assert verify_signature(raw, signature, KEYS).method == "raw"
    assert raw == kit.encode(body)  # the emulator and the tests' serialiser agree
    shuffled = kit.js_stringify(body, rng=random.Random(3)).encode()
    assert verify_signature(shuffled, signature, KEYS).method == "canonical"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.randoms())
def test_canonical_form_matches_the_tests_json_stringify(body, rnd):
    signed_form = kit.js_stringify(body).encode()
    assert canonical_json(parse_json_text(signed_form.decode())) == signed_form
    shuffled = kit.js_stringify(body, rng=rnd).encode()
    verified = verify_signature(shuffled, kit.sign(signed_form), KEYS)
    assert verified.secret == "current"
