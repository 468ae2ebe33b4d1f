"""IPN delivery as the provider does it, plus the misbehaviour merchants must survive.

Each status change becomes one signed body. Depending on the behaviour in force that body is sent
several times, held back and sent out of order, never sent at all, or re-sent when the merchant
does not answer 2xx within the callback timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from .config import EmulatorConfig
from .scenarios import Step
from .signing import SIGNATURE_HEADER, dumps_js, encode_ipn, sign
from .state import FINAL_STATUSES, Behaviour, Clock, IpnShape, Payment, iso, later

logger = logging.getLogger("nowpayments_emulator.ipn")

USER_AGENT = "NOWPayments-IPN/1.0 (+https://nowpayments.io; bitloot-emulator)"
_MAX_IN_FLIGHT = 32

Outcome = Literal["delivered", "rejected", "timeout", "error", "dropped", "no_callback_url"]


@dataclass(frozen=True, slots=True)
class Ipn:
    """One status change, frozen at the moment it happened; copies and retries resend it."""

    payment_id: int
    invoice_id: int | None
    payment_status: str
    url: str | None
    body: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    seq: int
    payment_id: int
    invoice_id: int | None
    payment_status: str
    url: str | None
    copy: int
    attempt: int
    outcome: Outcome
    status_code: int | None
    error: str | None
    duration_ms: float
    will_retry: bool
    body: str
    signature: str
    sent_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class IpnDispatcher:
    """Sends IPNs and tracks every background task so callers can await quiescence."""

    def __init__(
        self, config: EmulatorConfig, rng: random.Random, clock: Clock | None = None
    ) -> None:
        self._config = config
        self._rng = rng
        self._clock = clock or Clock()
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._seq = 0
        self.log: deque[AttemptRecord] = deque(maxlen=max(1, config.ipn_log_limit))
        # Deliveries in flight at once. Without a bound, a storm queues thousands of requests in
        # httpx's pool, whose scheduling is quadratic in the queue (the emulator then burns its
        # CPU there), and queued time would count against the callback timeout.
        self._slots = asyncio.Semaphore(_MAX_IN_FLIGHT)

    # -- task bookkeeping -------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def wait_idle(self, within: float) -> bool:
        """True once no playback or retry is left, False if that took longer than `within` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        await self.cancel_all()
        self.log.clear()
        self._seq = 0

    async def aclose(self) -> None:
        await self.cancel_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- building and sending ---------------------------------------------------------------

    def snapshot(self, payment: Payment, shape: IpnShape = "current") -> Ipn:
        fields = payment.ipn_body(shape)
        # The signature is always over the keys-sorted JSON.stringify form (the documented
        # algorithm). The current shape is sent in exactly that form; the legacy shape is sent
        # in the provider's own key order, so only a merchant that re-serialises canonically
        # (sorted keys, JS number text) can verify it.
        signed = encode_ipn(fields)
        body = signed if shape == "current" else dumps_js(fields, sort_keys=False).encode("utf-8")
        return Ipn(
            payment_id=payment.payment_id,
            invoice_id=payment.invoice_id,
            payment_status=payment.payment_status,
            url=payment.ipn_callback_url or self._config.default_ipn_callback_url,
            body=body,
            signature=sign(signed, self._config.ipn_secret),
        )

    def _record(
        self,
        ipn: Ipn,
        *,
        copy: int,
        attempt: int,
        outcome: Outcome,
        status_code: int | None = None,
        error: str | None = None,
        duration_ms: float = 0.0,
        will_retry: bool = False,
    ) -> None:
        self._seq += 1
        logger.info(
            "IPN payment=%s status=%s copy=%s attempt=%s -> %s%s",
            ipn.payment_id,
            ipn.payment_status,
            copy,
            attempt,
            outcome,
            f" {status_code}" if status_code is not None else "",
        )
        self.log.append(
            AttemptRecord(
                seq=self._seq,
                payment_id=ipn.payment_id,
                invoice_id=ipn.invoice_id,
                payment_status=ipn.payment_status,
                url=ipn.url,
                copy=copy,
                attempt=attempt,
                outcome=outcome,
                status_code=status_code,
                error=error,
                duration_ms=round(duration_ms, 3),
                will_retry=will_retry,
                body=ipn.body.decode("utf-8"),
                signature=ipn.signature,
                sent_at=iso(self._clock.now()),
            )
        )

    def record_dropped(self, ipn: Ipn) -> None:
        self._record(ipn, copy=0, attempt=0, outcome="dropped")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Redirects are not followed: a 3xx is not the 2xx the provider wants.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=_MAX_IN_FLIGHT),
            )
        return self._client

    async def send(self, ipn: Ipn, behaviour: Behaviour) -> None:
        """Send every copy once; copies that fail get their retries in the background."""
        if ipn.url is None:
            self._record(ipn, copy=1, attempt=1, outcome="no_callback_url")
            return
        for copy in range(1, behaviour.duplicates + 1):
            if not await self._attempt(ipn, copy, 1, behaviour):
                self.spawn(self._retry(ipn, copy, behaviour, self._clock.now()))

    async def _retry(self, ipn: Ipn, copy: int, behaviour: Behaviour, failed_at: datetime) -> None:
        # Waits run on the emulator's clock, counted from the failed attempt: advancing the clock
        # (POST /_emulator/clock) fires a retry that is due in minutes.
        for attempt, delay in enumerate(behaviour.retry_delays(), start=2):
            await self._clock.sleep_until(later(failed_at, delay))
            if await self._attempt(ipn, copy, attempt, behaviour):
                return
            failed_at = self._clock.now()

    async def _attempt(self, ipn: Ipn, copy: int, attempt: int, behaviour: Behaviour) -> bool:
        async with self._slots:
            return await self._deliver(ipn, copy, attempt, behaviour)

    async def _deliver(self, ipn: Ipn, copy: int, attempt: int, behaviour: Behaviour) -> bool:
        assert ipn.url is not None
        will_retry = attempt <= len(behaviour.retry_delays())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: ipn.signature,
        }
        started = time.perf_counter()  # the provider's clock starts when the request leaves
        try:
            response = await asyncio.wait_for(
                self._http().post(ipn.url, content=ipn.body, headers=headers),
                behaviour.callback_timeout,
            )
        except TimeoutError:
            self._record(
                ipn,
                copy=copy,
                attempt=attempt,
                outcome="timeout",
                error=f"no answer within {behaviour.callback_timeout:g} s",
                duration_ms=(time.perf_counter() - started) * 1000,
                will_retry=will_retry,
            )
            return False
        except httpx.HTTPError as exc:
            self._record(
                ipn,
                copy=copy,
                attempt=attempt,
                outcome="error",
                error=f"{type(exc).__name__}: {exc}",
                duration_ms=(time.perf_counter() - started) * 1000,
                will_retry=will_retry,
            )
            return False
        ok = 200 <= response.status_code < 300
        self._record(
            ipn,
            copy=copy,
            attempt=attempt,
            outcome="delivered" if ok else "rejected",
            status_code=response.status_code,
            duration_ms=(time.perf_counter() - started) * 1000,
            will_retry=will_retry and not ok,
        )
        return ok

    # -- playback ---------------------------------------------------------------------------

    def start_playback(self, payment: Payment, steps: Sequence[Step], behaviour: Behaviour) -> None:
        self.spawn(self._play(payment, list(steps), behaviour))

    async def _play(self, payment: Payment, steps: list[Step], behaviour: Behaviour) -> None:
        held: list[Ipn] = []
        for index, step in enumerate(steps):
            if index:
                if behaviour.step_delay:
                    await self._clock.sleep(behaviour.step_delay)
                else:
                    await asyncio.sleep(0)
            # State moves on even when the IPN is lost: GET /v1/payment must show the truth.
            if index or (step.status, step.actually_paid) != (
                payment.payment_status,
                payment.actually_paid,
            ):
                # A new payment is already `waiting`; its first IPN announces that, unchanged.
                payment.apply(step.status, step.actually_paid)
            if step.silent:
                continue  # the provider moved on without notifying (real logs skip statuses)
            ipn = self.snapshot(payment, behaviour.ipn_shape)
            is_last = index == len(steps) - 1
            if step.status in behaviour.drop_statuses or (
                behaviour.drop_final and is_last and step.status in FINAL_STATUSES
            ):
                self.record_dropped(ipn)
                continue
            if behaviour.order == "sequential":
                await self.send(ipn, behaviour)
            else:
                held.append(ipn)
        for ipn in self._reorder(held, behaviour.order):
            await self.send(ipn, behaviour)

    def _reorder(self, held: list[Ipn], order: str) -> list[Ipn]:
        if order == "reverse":
            return held[::-1]
        if order == "final_first":
            return held[-1:] + held[:-1]
        if order == "shuffle":
            shuffled = held[:]
            # A shuffle that happens to keep the order would prove nothing, so draw again.
            while len(shuffled) > 1 and shuffled == held:
                self._rng.shuffle(shuffled)
            return shuffled
        return held

    def push(self, payment: Payment, behaviour: Behaviour, *, send_ipn: bool) -> None:
        """Deliver the payment's current state (already applied by the caller) in the background."""
        ipn = self.snapshot(payment, behaviour.ipn_shape)
        if (
            not send_ipn
            or ipn.payment_status in behaviour.drop_statuses
            or (behaviour.drop_final and ipn.payment_status in FINAL_STATUSES)
        ):
            self.record_dropped(ipn)
            return
        self.spawn(self._push(ipn, behaviour))

    async def _push(self, ipn: Ipn, behaviour: Behaviour) -> None:
        await self.send(ipn, behaviour)
