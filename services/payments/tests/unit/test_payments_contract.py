"""The payments contract carries money as plain-notation strings and stays backwards compatible."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from shared.contracts.payments import CreateInvoiceRequest, PaymentStatusChanged


def event(**fields: object) -> PaymentStatusChanged:
    base: dict[str, object] = {
        "payment_id": uuid.uuid4(),
        "order_id": "o-1",
        "previous_status": "sending",
        "status": "finished",
        "is_final": True,
        "source": "ipn",
        "version": 6,
        "price_amount": Decimal("25.10"),
        "price_currency": "usd",
    }
    base.update(fields)
    return PaymentStatusChanged(**base)  # type: ignore[arg-type]


def test_amounts_are_plain_strings_in_json_and_round_trip_exactly() -> None:
    sent = event(surplus=Decimal("0.00000001"), pay_amount=Decimal("0.00036101"))
    body = json.loads(sent.model_dump_json())
    assert body["surplus"] == "0.00000001"  # not "1E-8"
    assert body["price_amount"] == "25.10" and body["pay_amount"] == "0.00036101"
    back = PaymentStatusChanged.model_validate_json(sent.model_dump_json())
    assert back.surplus == Decimal("0.00000001") and back == sent


def test_payloads_written_before_the_added_fields_still_parse() -> None:
    old = json.loads(event().model_dump_json())
    for added in ("shortfall", "provider_status", "outcome_amount", "outcome_currency"):
        old.pop(added)
    old["surplus"] = "1E-8"  # what pydantic wrote by default
    parsed = PaymentStatusChanged.model_validate(old)
    assert parsed.surplus == Decimal("0.00000001") and parsed.shortfall is None


def test_request_amount_stays_exact() -> None:
    request = CreateInvoiceRequest.model_validate_json(
        '{"order_id": "o", "price_amount": "0.1", "price_currency": "USD"}'
    )
    assert request.price_amount + Decimal("0.2") == Decimal("0.3")
