"""One-time preparation of the infrastructure: streams and the bucket."""

from __future__ import annotations

import asyncio

import nats

from shared.messaging.broker import ensure_streams


def ensure_nats_streams(nats_url: str, replicas: int = 1) -> None:
    async def run() -> None:
        nc = await nats.connect(nats_url, connect_timeout=5)
        try:
            await ensure_streams(nc.jetstream(), replicas=replicas)
        finally:
            await nc.close()

    asyncio.run(run())


def ensure_bucket(env: dict[str, str]) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(signature_version="s3v4"),
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if env["S3_BUCKET"] not in existing:
        client.create_bucket(Bucket=env["S3_BUCKET"])
