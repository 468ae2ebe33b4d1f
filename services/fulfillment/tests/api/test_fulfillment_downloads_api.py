"""The public download API: links, their failure pages, reissue, and the email that carries them."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from fulfillment import domain
from fulfillment.models import DownloadGrant, EmailLog
from fulfillment.settings import FulfillmentSettings
from fulfillment.storage import ObjectStore, make_client
from sqlalchemy import update

from ..conftest import PUBLIC_URL, email_parts, paid_event

ONE_ITEM = [("GAME-1", "Space Game", 2)]


def path_of(link: str) -> str:
    assert link.startswith(PUBLIC_URL)
    return link.removeprefix(PUBLIC_URL)


def expected_file(world, event, position: int = 1) -> bytes:
    sku, title, qty = [(i.sku, i.title, i.quantity) for i in event.items][position - 1]
    line = domain.LineToDeliver(position, sku, title, qty)
    return domain.licence_file(world.f.licence_material, event.order_id, line)


async def fetch_presigned(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as plain:
        return await plain.get(url)


async def test_valid_link_redirects_to_a_presigned_url_with_the_licence(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)

    async with world.client() as client:
        response = await client.get(path_of(await world.link(event.order_id)))
    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    location = response.headers["location"]
    assert location.startswith(world.f.settings.s3_endpoint_url)
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=300" in location
    fetched = await fetch_presigned(location)
    assert fetched.status_code == 200
    assert fetched.content == expected_file(world, event)
    assert "attachment" in fetched.headers["content-disposition"]
    [grant] = await world.grants(event.order_id)
    assert grant.downloads == 1


async def test_multi_item_link_lists_items_and_each_downloads_its_own_file(make_world):
    world = await make_world(worker=False)
    event = paid_event()  # two items
    await world.deliver(event)
    link = path_of(await world.link(event.order_id))

    async with world.client() as client:
        page = await client.get(link)
        assert page.status_code == 200
        assert "Space Game" in page.text and "Space DLC" in page.text
        hrefs = re.findall(r'href="([^"]+/downloads/[^"]+/\d)"', page.text)
        assert len(hrefs) == 2
        contents = []
        for href in hrefs:
            response = await client.get(path_of(href))
            assert response.status_code == 302
            contents.append((await fetch_presigned(response.headers["location"])).content)
        missing = await client.get(f"{link}/3")
    assert contents == [expected_file(world, event, 1), expected_file(world, event, 2)]
    assert missing.status_code == 404
    [grant] = await world.grants(event.order_id)
    assert grant.downloads == 2  # the listing page itself does not count
    assert grant.max_downloads == 2 * world.f.settings.download_cap


async def test_expired_link_offers_a_reissue_form(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)
    link = path_of(await world.link(event.order_id))
    async with world.ctx.sessions() as session, session.begin():
        await session.execute(
            update(DownloadGrant).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    async with world.client() as client:
        response = await client.get(link)
    assert response.status_code == 410
    assert "expired" in response.text
    assert 'action="http://fulfillment.test/downloads/reissue"' in response.text
    assert f'value="{event.order_id}"' in response.text
    assert world.s3.calls.get("head_object", 0) == 1  # only the delivery's own check


async def test_tampered_and_forged_links_get_a_clear_404(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)
    link = path_of(await world.link(event.order_id))
    token = link.rsplit("/", 1)[1]
    payload, stamp, sig = token.split(".")
    flipped = f"{payload}.{stamp}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"
    other_grant = world.f.link_for(uuid.uuid4(), datetime.now(UTC))  # signed, but no such grant

    async with world.client() as client:
        answers = [
            await client.get(f"/downloads/{flipped}"),
            await client.get(f"/downloads/{payload}x.{stamp}.{sig}"),
            await client.get("/downloads/not-a-token"),
            await client.get(path_of(other_grant)),
        ]
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert all("not valid" in a.text for a in answers)
    assert all("Traceback" not in a.text for a in answers)
    [grant] = await world.grants(event.order_id)
    assert grant.downloads == 0


async def test_revoked_link_is_refused(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)
    async with world.ctx.sessions() as session, session.begin():
        await session.execute(update(DownloadGrant).values(revoked_at=datetime.now(UTC)))
    async with world.client() as client:
        response = await client.get(path_of(await world.link(event.order_id)))
    assert response.status_code == 403
    assert "withdrawn" in response.text
    assert "<form" not in response.text  # no self-service way around an operator's decision


async def test_download_cap_holds_under_concurrent_clicks(make_world):
    world = await make_world(worker=False, download_cap=2)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)
    link = path_of(await world.link(event.order_id))

    async with world.client() as client:
        answers = await asyncio.gather(*(client.get(link) for _ in range(5)))
        after = await client.get(link)
    assert sorted(a.status_code for a in answers) == [302, 302, 403, 403, 403]
    assert after.status_code == 403
    assert "Download limit reached" in after.text
    assert "<form" in after.text
    [grant] = await world.grants(event.order_id)
    assert grant.downloads == 2


async def test_storage_outage_answers_503_and_costs_no_download(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)
    dead = FulfillmentSettings(
        s3_endpoint_url="http://127.0.0.1:9",
        s3_bucket="x",
        download_token_secret="irrelevant-but-set-0123456789",
    )
    world.f.store = ObjectStore(make_client(dead), "x")

    async with world.client() as client:
        response = await client.get(path_of(await world.link(event.order_id)))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert "Traceback" not in response.text
    [grant] = await world.grants(event.order_id)
    assert grant.downloads == 0


async def test_database_outage_answers_503(make_world):
    world = await make_world(worker=False)
    broken = await make_world(
        worker=False, database_url="postgresql+asyncpg://postgres@127.0.0.1:9/none"
    )
    link = world.f.link_for(uuid.uuid4(), datetime.now(UTC))
    async with broken.client() as client:
        response = await client.get(path_of(link))
    assert response.status_code == 503
    assert "briefly unavailable" in response.text


async def test_completed_email_has_the_link_and_no_key_material(make_world, mailbox_capture):
    world = await make_world(worker=False)
    event = paid_event()
    await world.deliver(event)
    assert await world.dispatcher.dispatch_once() == 1

    [message] = mailbox_capture.messages()
    assert message["To"] == event.email
    assert message["Subject"] == f"Your BitLoot order {event.order_id} is ready"
    parts = email_parts(message)
    link = await world.link(event.order_id)
    raw = message.as_string()
    for body in (parts["text/plain"], parts["text/html"]):
        assert link in body
    for position in (1, 2):
        sku, title, qty = [(i.sku, i.title, i.quantity) for i in event.items][position - 1]
        line = domain.LineToDeliver(position, sku, title, qty)
        for key in domain.licence_keys(world.f.licence_material, event.order_id, line):
            assert key not in raw
            assert key.replace("-", "") not in raw
    assert world.f.settings.token_secret().get_secret_value() not in raw
    # ...and the link in the email works.
    async with world.client() as client:
        response = await client.get(path_of(link))
    assert response.status_code == 200  # two items: the listing page


async def test_reissue_answers_the_same_whether_or_not_it_matches(make_world, mailbox_capture):
    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)
    await world.dispatcher.dispatch_once()
    mailbox_capture.clear()

    async with world.client() as client:
        tries = [
            {"order_id": event.order_id, "email": "CAROL@example.com "},  # matches
            {"order_id": event.order_id, "email": "mallory@example.com"},  # wrong email
            {"order_id": "ord_unknown", "email": event.email},  # no such order
        ]
        answers = [await client.post("/downloads/reissue", json=body) for body in tries]
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1
    same = [{k: v for k, v in a.headers.items() if k != "x-correlation-id"} for a in answers]
    assert same[0] == same[1] == same[2]

    grants = await world.grants(event.order_id)
    assert [g.kind for g in grants] == ["initial", "reissue"]
    assert await world.dispatcher.dispatch_once() == 1
    [message] = mailbox_capture.messages()
    assert message["To"] == event.email  # the order's address, not the one typed in
    assert message["Subject"].startswith("A new download link")
    new_link = world.f.link_for(grants[1].id, grants[1].created_at)
    assert new_link in email_parts(message)["text/plain"]
    async with world.client() as client:
        response = await client.get(path_of(new_link))
    assert response.status_code == 302


async def test_reissue_form_post_and_validation(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)

    async with world.client() as client:
        form_page = await client.get("/downloads/reissue")
        ok = await client.post(
            "/downloads/reissue", data={"order_id": event.order_id, "email": event.email}
        )
        bad_email = await client.post(
            "/downloads/reissue", json={"order_id": event.order_id, "email": "nope"}
        )
        no_order = await client.post("/downloads/reissue", data={"email": event.email})
        too_big = await client.post(
            "/downloads/reissue", json={"order_id": "x" * 5000, "email": event.email}
        )
        not_json = await client.post(
            "/downloads/reissue", content=b"{", headers={"content-type": "application/json"}
        )
    assert form_page.status_code == 200 and "<form" in form_page.text
    assert ok.status_code == 202 and "Check your inbox" in ok.text
    assert bad_email.status_code == 422
    assert bad_email.json()["detail"][0]["field"] == "email"
    assert no_order.status_code == 422 and "order_id" in no_order.text
    assert too_big.status_code == 413
    assert not_json.status_code == 422 and not_json.json()["detail"][0]["field"] == "body"
    # Only the valid form post did anything.
    assert [g.kind for g in await world.grants(event.order_id)] == ["initial", "reissue"]


async def test_reissue_is_rate_limited_per_order_and_per_ip(make_world):
    world = await make_world(worker=False, reissue_order_capacity=2, reissue_ip_capacity=4)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)

    async with world.client() as client:
        known = [
            await client.post(
                "/downloads/reissue", json={"order_id": event.order_id, "email": event.email}
            )
            for _ in range(3)
        ]
        unknown = [
            await client.post(
                "/downloads/reissue", json={"order_id": "ord_nobody", "email": event.email}
            )
            for _ in range(2)
        ]
        async with world.client(ip="198.51.100.9") as other_ip:
            fresh_ip = await other_ip.post(
                "/downloads/reissue", json={"order_id": "ord_other", "email": event.email}
            )
    # Per order: two, then 429 — the same for an order that does not exist.
    assert [a.status_code for a in known] == [202, 202, 429]
    assert int(known[2].headers["retry-after"]) > 0
    # Per IP: the fourth request from this address is refused whatever the order.
    assert [a.status_code for a in unknown] == [202, 429]
    assert fresh_ip.status_code == 202
    assert [g.kind for g in await world.grants(event.order_id)] == ["initial", "reissue", "reissue"]
    assert await world.count(EmailLog, EmailLog.template == "reissue") == 2


async def test_reissue_after_revocation_grants_nothing(make_world):
    from fulfillment import service
    from shared.contracts.fulfillment import RevokeGrantsRequest

    world = await make_world(worker=False)
    event = paid_event(items=ONE_ITEM)
    await world.deliver(event)
    async with world.ctx.sessions() as session, session.begin():
        await service.revoke_order_grants(
            session, RevokeGrantsRequest(order_id=event.order_id, operator_id="op", reason="fraud")
        )
    async with world.client() as client:
        answer = await client.post(
            "/downloads/reissue", json={"order_id": event.order_id, "email": event.email}
        )
    assert answer.status_code == 202
    assert [g.kind for g in await world.grants(event.order_id)] == ["initial"]
