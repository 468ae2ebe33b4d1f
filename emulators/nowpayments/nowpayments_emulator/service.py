"""The emulator's use cases, shared by the REST API, the hosted page and the control API."""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal

from .coins import Coin
from .config import EmulatorConfig
from .delivery import IpnDispatcher
from .scenarios import Scenario, scenario_steps
from .state import (
    Behaviour,
    BehaviourPatch,
    Invoice,
    Payment,
    Store,
    resolve_behaviour,
)


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        # Ids, addresses and shuffles only need to look random, and be repeatable with a seed.
        self.rng = random.Random(config.seed)  # noqa: S311
        self.store = Store(config, self.rng)
        self.dispatcher = IpnDispatcher(config, self.rng)

    def behaviour_for(self, invoice: Invoice | None, request: BehaviourPatch | None) -> Behaviour:
        # Request beats invoice beats global beats config.
        return resolve_behaviour(
            self.config,
            self.store.behaviour,
            invoice.behaviour if invoice else None,
            request,
        )

    def invoice_url(self, invoice: Invoice) -> str:
        return f"{self.config.public_url}/invoice/{invoice.id}"

    def open_payment(self, invoice: Invoice, coin: Coin) -> Payment:
        return self.store.create_payment(
            coin=coin,
            price_amount=invoice.price_amount,
            price_currency=invoice.price_currency,
            invoice=invoice,
            order_id=invoice.order_id,
            order_description=invoice.order_description,
            ipn_callback_url=invoice.ipn_callback_url,
        )

    def play(
        self,
        payment: Payment,
        scenario: Scenario,
        *,
        request: BehaviourPatch | None = None,
        actually_paid: Decimal | None = None,
        statuses: Sequence[str] | None = None,
    ) -> list[str]:
        """Start the scenario's status sequence in the background; return the statuses planned."""
        invoice = self.store.invoices.get(payment.invoice_id) if payment.invoice_id else None
        steps = scenario_steps(scenario, payment, actually_paid=actually_paid, statuses=statuses)
        self.dispatcher.start_playback(payment, steps, self.behaviour_for(invoice, request))
        return [step.status for step in steps]

    def push_status(
        self,
        payment: Payment,
        status: str,
        *,
        actually_paid: Decimal | None,
        request: BehaviourPatch | None,
        send_ipn: bool,
    ) -> None:
        invoice = self.store.invoices.get(payment.invoice_id) if payment.invoice_id else None
        payment.apply(status, actually_paid)
        self.dispatcher.push(payment, self.behaviour_for(invoice, request), send_ipn=send_ipn)

    def expire_invoice(self, invoice: Invoice) -> None:
        """Expire now; a payment still waiting for coins expires with it, as on the provider."""
        invoice.expired_manually = True
        for payment_id in invoice.payment_ids:
            payment = self.store.payments[payment_id]
            if payment.payment_status == "waiting":
                self.push_status(
                    payment, "expired", actually_paid=None, request=None, send_ipn=True
                )

    async def reset(self) -> None:
        await self.dispatcher.reset()
        self.store.reset()

    async def aclose(self) -> None:
        await self.dispatcher.aclose()
