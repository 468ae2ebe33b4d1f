"""Object storage through boto3 (S3, R2, MinIO, moto), off the event loop.

boto3 is synchronous, so every call runs in a worker thread (``asyncio.to_thread``); a boto3
client is thread-safe, one per process is enough. Uploads are idempotent: the key is
deterministic and a HEAD that shows the same MD5 (the ETag of a single-part PUT on S3, R2 and
MinIO) skips the PUT, so a retried delivery never uploads twice.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fulfillment.settings import FulfillmentSettings


class StorageUnavailableError(RuntimeError):
    """The bucket could not be reached or refused us; callers retry or answer 503."""


@dataclass(frozen=True)
class PutResult:
    key: str
    uploaded: bool  # False: the same bytes were already there


def make_client(settings: FulfillmentSettings, *, endpoint_url: str | None = None) -> Any:
    """A SigV4 client. Credentials come from boto3's usual chain (AWS_* variables first)."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=3,
        read_timeout=10,
        # boto3 >= 1.36 adds CRC checksums by default that some S3-compatible stores reject;
        # the explicit Content-MD5 below is the integrity check every store understands.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=config,
    )


def _is_not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"404", "NoSuchKey", "NotFound"} or status == 404


class ObjectStore:
    def __init__(self, client: Any, bucket: str, *, presign_client: Any | None = None) -> None:
        self._client = client
        # Presigning is local math; a second client only changes the host browsers are sent to.
        self._presign_client = presign_client or client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: FulfillmentSettings) -> ObjectStore:
        client = make_client(settings)
        presign = (
            make_client(settings, endpoint_url=settings.s3_public_endpoint_url)
            if settings.s3_public_endpoint_url
            else None
        )
        return cls(client, settings.s3_bucket, presign_client=presign)

    def _head_sync(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise StorageUnavailableError(f"head {key}: {exc.response.get('Error', {})}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailableError(f"head {key}: {type(exc).__name__}") from exc
        return head

    def _put_if_changed_sync(self, key: str, data: bytes, content_type: str) -> PutResult:
        md5 = hashlib.md5(data, usedforsecurity=False)
        head = self._head_sync(key)
        if head is not None and str(head.get("ETag", "")).strip('"') == md5.hexdigest():
            return PutResult(key, uploaded=False)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                # The store checks the bytes it received against this; a torn upload fails.
                ContentMD5=base64.b64encode(md5.digest()).decode(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailableError(f"put {key}: {type(exc).__name__}") from exc
        return PutResult(key, uploaded=True)

    async def put_if_changed(
        self, key: str, data: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> PutResult:
        return await asyncio.to_thread(self._put_if_changed_sync, key, data, content_type)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._head_sync, key) is not None

    async def get(self, key: str) -> bytes:
        def run() -> bytes:
            try:
                body: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                raise StorageUnavailableError(f"get {key}: {type(exc).__name__}") from exc
            return body

        return await asyncio.to_thread(run)

    def presigned_get(self, key: str, *, filename: str, expires_in: int) -> str:
        url: str = self._presign_client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=expires_in,
        )
        return url

    async def check(self) -> None:
        """Readiness: the bucket answers."""

        def run() -> None:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as exc:
                raise StorageUnavailableError(
                    f"bucket {self.bucket}: {type(exc).__name__}"
                ) from exc

        await asyncio.to_thread(run)
