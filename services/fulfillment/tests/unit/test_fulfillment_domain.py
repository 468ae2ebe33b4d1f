"""Pure rules: licences, keys, grant states, backoff, masking."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fulfillment import domain
from fulfillment.domain import GrantState, LineToDeliver

MATERIAL = domain.licence_key_material(b"unit-test-secret")
LINE = LineToDeliver(1, "GAME-1", "Space Game", 3)
KEY_FORMAT = re.compile(r"^[A-Z2-7]{5}(-[A-Z2-7]{5}){4}$")


def test_licence_keys_are_deterministic_and_well_formed():
    keys = domain.licence_keys(MATERIAL, "ord_1", LINE)
    assert keys == domain.licence_keys(MATERIAL, "ord_1", LINE)
    assert len(keys) == 3 and len(set(keys)) == 3
    assert all(KEY_FORMAT.match(k) for k in keys)


@pytest.mark.parametrize(
    ("order_id", "line", "material"),
    [
        ("ord_2", LINE, MATERIAL),
        ("ord_1", LineToDeliver(2, "GAME-1", "Space Game", 3), MATERIAL),
        ("ord_1", LineToDeliver(1, "GAME-2", "Space Game", 3), MATERIAL),
        ("ord_1", LINE, domain.licence_key_material(b"other-secret")),
    ],
)
def test_any_input_change_gives_other_keys(order_id, line, material):
    assert not set(domain.licence_keys(material, order_id, line)) & set(
        domain.licence_keys(MATERIAL, "ord_1", LINE)
    )


def test_fields_cannot_be_shifted_between_order_and_sku():
    # "ab" + "c" and "a" + "bc" must not collide: fields are separated, not concatenated.
    one = domain.licence_key(MATERIAL, "ab", 1, "c", 1)
    two = domain.licence_key(MATERIAL, "a", 1, "bc", 1)
    assert one != two


def test_licence_file_is_identical_bytes_every_time_and_holds_the_keys():
    data = domain.licence_file(MATERIAL, "ord_1", LINE)
    assert data == domain.licence_file(MATERIAL, "ord_1", LINE)
    text = data.decode()
    assert "Order: ord_1" in text and "Space Game (GAME-1)" in text
    assert all(k in text for k in domain.licence_keys(MATERIAL, "ord_1", LINE))


def test_object_keys_are_deterministic_safe_and_distinct():
    key = domain.object_key("deliveries/", "ord_1", LINE)
    assert key == domain.object_key("deliveries", "ord_1", LINE)
    assert key.startswith("deliveries/ord_1/001-GAME-1-")
    weird = domain.object_key("d", "../ord 1", LineToDeliver(1, "a/b", "t", 1))
    assert ".." not in weird and " " not in weird and weird.count("/") == 2
    # Two ids that slug alike still get different keys.
    assert domain.object_key("d", "ord/1", LINE) != domain.object_key("d", "ord 1", LINE)


@pytest.mark.parametrize(
    ("order_id", "email", "items", "reason"),
    [
        ("ord", "a@b.c", [], "no items"),
        ("ord", "a@b.c", [("S", "t", 0)], "quantity 0"),
        ("ord", "a@b.c", [("S", "t", 1001)], "quantity 1001"),
        ("ord", "a@b.c", [("", "t", 1)], "sku"),
        ("", "a@b.c", [("S", "t", 1)], "order id"),
        ("x" * 65, "a@b.c", [("S", "t", 1)], "order id"),
        ("ord", "nobody", [("S", "t", 1)], "email"),
    ],
)
def test_undeliverable_orders_are_refused(order_id, email, items, reason):
    with pytest.raises(domain.UndeliverableOrderError, match=reason):
        domain.lines_to_deliver(order_id, email, items)


def test_lines_are_numbered_and_titles_cut_to_the_stored_length():
    lines = domain.lines_to_deliver("o", "a@b.c", [("A", "x" * 300, 1), ("B", "b", 2)])
    assert [(line.position, line.sku) for line in lines] == [(1, "A"), (2, "B")]
    assert len(lines[0].title) == domain.MAX_TITLE_LENGTH


NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expires", "revoked", "downloads", "expected"),
    [
        (NOW + timedelta(hours=1), None, 0, GrantState.OK),
        (NOW + timedelta(hours=1), None, 4, GrantState.OK),
        (NOW + timedelta(hours=1), None, 5, GrantState.EXHAUSTED),
        (NOW, None, 0, GrantState.EXPIRED),
        (NOW - timedelta(hours=1), None, 5, GrantState.EXPIRED),
        (NOW - timedelta(hours=1), NOW, 5, GrantState.REVOKED),
        (NOW + timedelta(hours=1), NOW, 0, GrantState.REVOKED),
    ],
)
def test_grant_state_precedence(expires, revoked, downloads, expected):
    state = domain.grant_state(
        now=NOW, expires_at=expires, revoked_at=revoked, downloads=downloads, max_downloads=5
    )
    assert state is expected


def test_email_backoff_doubles_up_to_the_cap():
    assert [domain.email_backoff(n, 5, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert domain.email_backoff(10_000, 5, 60) == 60


@pytest.mark.parametrize(
    ("address", "masked"),
    [("carol@example.com", "c***@example.com"), ("x@y.z", "x***@y.z"), ("broken", "***")],
)
def test_mask_email(address, masked):
    assert domain.mask_email(address) == masked


def test_same_email_ignores_case_and_spaces():
    assert domain.same_email(" Carol@Example.com", "carol@example.com ")
    assert not domain.same_email("carol@example.com", "carol@example.org")
