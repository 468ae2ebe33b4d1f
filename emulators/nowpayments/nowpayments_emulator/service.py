"""The emulator's use cases, shared by the REST API, the hosted page and the control API."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from decimal import Decimal

from .coins import Coin
from .config import EmulatorConfig
from .delivery import IpnDispatcher
from .scenarios import Scenario, Step, scenario_steps
from .state import (
    Behaviour,
    BehaviourPatch,
    Invoice,
    Payment,
    Store,
    resolve_behaviour,
)

# How often real time is checked against payment lifetimes (the clock endpoint acts at once).
_SWEEP_EVERY = 1.0


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        # Ids, addresses and shuffles only need to look random, and be repeatable with a seed.
        self.rng = random.Random(config.seed)  # noqa: S311
        self.store = Store(config, self.rng)
        self.clock = self.store.clock
        self.dispatcher = IpnDispatcher(config, self.rng, self.clock)
        self._sweeper: asyncio.Task[None] | None = None

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

    def watch_lifetimes(self) -> None:
        """Start (once) the background check that expires payments as real time passes.

        Not counted as pending work: wait-idle is about IPNs, and this never ends.
        """
        if self._sweeper is not None and not self._sweeper.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweeper = loop.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            self.sweep_expired()

    def open_payment(self, invoice: Invoice, coin: Coin) -> Payment:
        self.watch_lifetimes()
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
    ) -> list[Step]:
        """Start the scenario's status sequence in the background; return the steps planned."""
        self.watch_lifetimes()
        invoice = self.invoice_of(payment)
        steps = scenario_steps(scenario, payment, actually_paid=actually_paid, statuses=statuses)
        self.dispatcher.start_playback(payment, steps, self.behaviour_for(invoice, request))
        return steps

    def invoice_of(self, payment: Payment) -> Invoice | None:
        return self.store.invoices.get(payment.invoice_id) if payment.invoice_id else None

    def root_of(self, payment: Payment) -> Payment:
        """The original payment a repeated or wrong-asset deposit points at."""
        while payment.parent_payment_id is not None:
            parent = self.store.payments.get(payment.parent_payment_id)
            if parent is None:
                break
            payment = parent
        return payment

    def redeposit(
        self,
        payment: Payment,
        amount: Decimal,
        *,
        coin: Coin | None = None,
        status: str | None = None,
        statuses: Sequence[str] | None = None,
        request: BehaviourPatch | None = None,
        send_ipn: bool = True,
        quote: str | None = None,
    ) -> tuple[Payment, list[Step]]:
        """Coins sent again to a payment's address: a new payment with parent_payment_id.

        Same coin = a repeated deposit (status from the account setting, partially_paid by
        default). Another coin = a wrong-asset deposit: finished with auto-processing on, else
        held at confirming for the merchant to resolve by hand (push a status to resolve it).
        """
        parent = self.root_of(payment)
        deposit_coin = coin or parent.coin
        wrong_asset = deposit_coin.code != parent.coin.code
        if statuses:
            sequence = list(statuses)
        else:
            final = status
            if final is None and not wrong_asset:
                final = self.config.repeated_deposit_status
            if final is None and self.config.wrong_asset_auto_processing:
                final = "finished"
            # The coins are already on the address when the child payment is born.
            sequence = ["confirming"] + ([final] if final and final != "confirming" else [])
        child = self.store.create_child(
            parent,
            coin=deposit_coin,
            amount=amount,
            status=sequence[0],
            kind="wrong_asset" if wrong_asset else "repeated_deposit",
            quote=quote or self.config.child_quote,
        )
        steps = [Step(item, child.actually_paid) for item in sequence]
        behaviour = self.behaviour_for(self.invoice_of(child), request)
        if send_ipn:
            self.dispatcher.start_playback(child, steps, behaviour)
        else:
            for index, step in enumerate(steps):
                if index:
                    child.apply(step.status, step.actually_paid)
                self.dispatcher.record_dropped(self.dispatcher.snapshot(child, behaviour.ipn_shape))
        return child, steps

    def sweep_expired(self) -> list[int]:
        """Expire (with an IPN) every payment still waiting past its lifetime."""
        self.watch_lifetimes()
        at = self.clock.now()
        expired: list[int] = []
        for payment in list(self.store.payments.values()):
            if payment.is_due_to_expire(at):
                self.push_status(
                    payment, "expired", actually_paid=None, request=None, send_ipn=True
                )
                expired.append(payment.payment_id)
        return expired

    def advance_clock(self, seconds: float) -> list[int]:
        """Move the emulator's time on; payments whose lifetime ran out expire now."""
        self.clock.advance(seconds)
        return self.sweep_expired()

    def push_status(
        self,
        payment: Payment,
        status: str,
        *,
        actually_paid: Decimal | None,
        request: BehaviourPatch | None,
        send_ipn: bool,
    ) -> None:
        invoice = self.invoice_of(payment)
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
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.dispatcher.aclose()
