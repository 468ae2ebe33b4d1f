"""Write the published contracts into docs/: OpenAPI per HTTP API, AsyncAPI for the events.

    uv run python tools/gen_docs.py          # (re)write docs/openapi/*.json, docs/asyncapi/*.json
    uv run python tools/gen_docs.py --check  # exit 1 when the committed copies are stale (CI)

The AsyncAPI documents come from FastStream: ``events.json`` lists every event subject with its
pydantic schema (what each context publishes) and every request/reply subject; ``<service>.json``
lists what that service's worker subscribes to.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Settings refuse missing or placeholder secrets; generating documents needs none of them.
DUMMY_ENV = {
    name: "docs-generation-only-not-a-secret"
    for name in (
        "NOWPAYMENTS_IPN_SECRET",
        "NOWPAYMENTS_API_KEY",
        "ADMIN_JWT_SECRET",
        "DOWNLOAD_TOKEN_SECRET",
        "WEB_SESSION_SECRET",
        "ORDER_TOKEN_PEPPER",
    )
}


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def openapi_documents() -> dict[str, str]:
    from shared.launcher import installed
    from shared.topology import SERVICES

    out: dict[str, str] = {}
    for service in SERVICES:
        if not installed(service.package):
            continue
        main = importlib.import_module(f"{service.package}.main")
        app = main.create_api()
        out[f"openapi/{service.name}.json"] = dumps(app.openapi())
    return out


def asyncapi_documents() -> dict[str, str]:
    from faststream.nats import NatsBroker
    from faststream.specification import AsyncAPI
    from shared.contracts import event_types
    from shared.contracts.fulfillment import RevokeGrantsReply, RevokeGrantsRequest
    from shared.contracts.payments import CreateInvoiceReply, CreateInvoiceRequest
    from shared.contracts.streams import stream_for_subject
    from shared.contracts.webhooks import ReprocessReply, ReprocessRequest
    from shared.launcher import installed
    from shared.topology import SERVICES

    out: dict[str, str] = {}
    broker = NatsBroker("nats://nats:4222")
    for subject, cls in sorted(event_types().items()):
        broker.publisher(
            subject,
            schema=cls,
            title=subject,
            description=f"{(cls.__doc__ or cls.__name__).strip()} "
            f"(stream {stream_for_subject(subject)})",
        )
    for request, reply in (
        (CreateInvoiceRequest, CreateInvoiceReply),
        (ReprocessRequest, ReprocessReply),
        (RevokeGrantsRequest, RevokeGrantsReply),
    ):
        broker.publisher(
            request.SUBJECT,
            schema=request,
            title=request.SUBJECT,
            description=f"NATS request-reply (no stream); the answer is a {reply.__name__}: "
            + json.dumps(reply.model_json_schema(), sort_keys=True),
        )
    spec = AsyncAPI(broker, title="BitLoot events", version="1.0.0")
    out["asyncapi/events.json"] = dumps(json.loads(spec.to_specification().to_json()))

    for service in SERVICES:
        if not installed(service.package):
            continue
        main = importlib.import_module(f"{service.package}.main")
        worker = main.create_worker()
        ctx = worker.state.ctx
        spec = AsyncAPI(ctx.broker, title=f"BitLoot {service.name} worker", version="1.0.0")
        out[f"asyncapi/{service.name}.json"] = dumps(json.loads(spec.to_specification().to_json()))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/ is stale")
    args = parser.parse_args()
    for key, value in DUMMY_ENV.items():
        os.environ.setdefault(key, value)
    # The documents must not depend on where the generator runs.
    os.environ["NATS_URL"] = "nats://nats:4222"
    os.environ["DATABASE_URL"] = "postgresql+asyncpg://bitloot@postgres:5432/bitloot"
    os.environ.setdefault("LOG_JSON", "false")
    documents = {**openapi_documents(), **asyncapi_documents()}
    stale: list[str] = []
    for rel, content in sorted(documents.items()):
        path = DOCS / rel
        current = path.read_text() if path.exists() else ""
        if current == content:
            continue
        if args.check:
            stale.append(rel)
            diff = difflib.unified_diff(
                current.splitlines(),
                content.splitlines(),
                f"committed/{rel}",
                f"generated/{rel}",
                lineterm="",
                n=1,
            )
            print("\n".join(list(diff)[:40]))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"wrote docs/{rel}")
    if stale:
        print(
            f"\nstale contract documents: {', '.join(stale)} — run `make docs` and commit",
            file=sys.stderr,
        )
        return 1
    if args.check:
        print(f"docs/ contracts up to date ({len(documents)} documents)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
