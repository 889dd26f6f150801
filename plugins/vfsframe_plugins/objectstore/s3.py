"""The `s3` store: any S3-compatible endpoint (AWS, MinIO, Ceph RGW, moto, ...) through boto3.

boto3 is imported when a store is opened, so a config naming only `local` stores does not need
it. Retries: botocore's "standard" mode retries throttling (SlowDown, 503), 5xx and connection
errors with exponential backoff and jitter, up to ``max_attempts`` tries in all.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .store import (
    ListPage,
    ObjectInfo,
    ObjectReader,
    ObjectStore,
    Part,
    StaleObjectError,
    StoreConfig,
    StoreType,
)

MIN_PART = 5 << 20
MAX_COPY = 5 << 30  # CopyObject's limit; larger objects are copied in parts
COPY_PART = 512 << 20
DELETE_BATCH = 1000


class S3StoreConfig(StoreConfig):
    """A bucket (or a prefix of one) on an S3-compatible endpoint."""

    type: Literal["s3"] = "s3"
    bucket: str = Field(
        min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$",
        description="Bucket name; it must exist (the share refuses to start otherwise).",
    )  # fmt: skip
    prefix: str = Field(
        "",
        description="Key prefix the share lives under, e.g. 'team/data/' (a trailing '/' is "
        "added). Empty: the whole bucket.",
    )
    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Endpoint URL, e.g. 'http://127.0.0.1:9000' for MinIO. Default: AWS for "
        "the region.",
    )
    region: str | None = Field(
        None, description="Region name; default: from the AWS config / AWS_REGION, else us-east-1."
    )
    access_key_id: SecretStr | None = Field(
        None,
        description="Access key id. Default: the usual AWS sources (environment, "
        "~/.aws/credentials, instance or container roles).",
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Secret access key; required with `access_key_id`."
    )
    session_token: SecretStr | None = Field(
        None, description="Session token for temporary credentials (with `access_key_id`)."
    )
    profile: str | None = Field(
        None, description="A profile of the AWS config files; excludes explicit keys."
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto",
        description="Bucket in the host name (virtual) or in the path (path). MinIO and most "
        "self-hosted endpoints need 'path'; 'auto' lets botocore choose.",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Tries per request, the first included, on throttling, 5xx and connection "
        "errors (exponential backoff with jitter between them).",
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a connection.")
    read_timeout: float = Field(30.0, gt=0, description="Seconds to wait for response bytes.")
    max_connections: int = Field(32, ge=1, le=1024, description="Size of the HTTP connection pool.")
    metadata_limit: int = Field(
        2048,
        ge=256,
        description="Bytes of user metadata (names + values) per object; AWS allows 2 KiB. "
        "mode, owner, times and xattrs must fit in it.",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError("a key prefix does not start with '/'")
        if "//" in value:
            raise ValueError("a key prefix may not contain '//'")
        return value if not value or value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _credentials_complete(self) -> S3StoreConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "access_key_id and secret_access_key go together: give both or neither"
            )
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("give either profile or access_key_id/secret_access_key, not both")
        return self


def _client_config(config_type: Any, config: S3StoreConfig) -> Any:
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": config.max_attempts},
        "connect_timeout": config.connect_timeout,
        "read_timeout": config.read_timeout,
        "max_pool_connections": config.max_connections,
        "s3": {"addressing_style": config.addressing_style},
    }
    try:
        # botocore >= 1.36 checksums every put by default: a pass over the data that some
        # S3-compatible servers refuse; ETags already check transfers.
        return config_type(
            **options,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    except TypeError:  # an older botocore: it adds no checksums of its own
        return config_type(**options)


def _code(exc: Any) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def _os_error(exc: Exception, key: str) -> OSError:
    """A botocore failure as the errno the caller sees."""
    code = _code(exc)
    if code in ("NoSuchKey", "404", "NotFound"):
        return FileNotFoundError(errno.ENOENT, "no such object", key)
    if code in ("PreconditionFailed", "412"):
        return StaleObjectError(key)
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return PermissionError(errno.EACCES, f"the endpoint refused access ({code})", key)
    if code in ("NoSuchBucket",):
        return OSError(errno.EIO, "the bucket is gone", key)
    return OSError(errno.EIO, f"object store request failed: {exc}", key)


class S3Reader(ObjectReader):
    """Ranged GETs of one version: each carries If-Match with the ETag seen at open, so a
    replacement by another writer surfaces as ESTALE instead of a mix of two versions."""

    def __init__(self, store: S3Store, key: str, info: ObjectInfo, etag: str) -> None:
        self._store = store
        self._key = key
        self._etag = etag
        self.size = info.size

    def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        wanted = min(sum(len(b) for b in buffers), self.size - offset)
        if wanted <= 0:
            return 0
        body = self._store._get_range(self._key, offset, offset + wanted, self._etag)
        try:
            done = 0
            for buffer in buffers:
                while done < wanted and len(buffer):
                    chunk = body.read(min(len(buffer), wanted - done, 1 << 20))
                    if not chunk:
                        return done
                    buffer[: len(chunk)] = chunk
                    buffer = buffer[len(chunk) :]
                    done += len(chunk)
                if done >= wanted:
                    break
            return done
        except Exception as exc:
            raise _os_error(exc, self._key) from exc
        finally:
            body.close()


class S3Store(ObjectStore):
    needs_network = True
    min_part_size = MIN_PART

    def __init__(self, config: S3StoreConfig) -> None:
        import boto3
        from botocore.config import Config

        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.metadata_limit = config.metadata_limit
        session = boto3.session.Session(profile_name=config.profile)
        secret = config.secret_access_key
        token = config.session_token
        self.client = session.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id.get_secret_value()
            if config.access_key_id
            else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            aws_session_token=token.get_secret_value() if token else None,
            config=_client_config(Config, config),
        )

    def _call(self, method: str, key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise _os_error(exc, key) from exc

    def check(self) -> None:
        where = self.config.endpoint_url or "AWS"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            name = type(exc).__name__
            code = _code(exc)
            if name == "NoCredentialsError":
                raise OSError(
                    errno.EACCES,
                    "no AWS credentials: set access_key_id/secret_access_key in the store "
                    "config, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile",
                ) from None
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise OSError(
                    errno.ENOENT, f"bucket {self.bucket!r} does not exist at {where}: create it"
                ) from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise OSError(
                    errno.EACCES,
                    f"access to bucket {self.bucket!r} at {where} denied ({code}): check the "
                    "credentials and the bucket policy",
                ) from None
            raise OSError(
                errno.EIO, f"cannot reach bucket {self.bucket!r} at {where}: {exc}"
            ) from None

    # -- objects -------------------------------------------------------------------------

    @staticmethod
    def _version(response: dict[str, Any]) -> str:
        # Whole seconds: HEAD's Last-Modified header has no more, listings' XML has ms.
        return f"{response.get('ETag', '')}@{int(response['LastModified'].timestamp())}"

    def head(self, key: str) -> ObjectInfo:
        response = self._call("head_object", key, Key=self.prefix + key)
        return self._info(key, response)

    def _info(self, key: str, response: dict[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key,
            int(response.get("ContentLength", response.get("Size", 0))),
            int(response["LastModified"].timestamp()) * 1_000_000_000,
            self._version(response),
            dict(response.get("Metadata", {})),
        )

    def open_reader(self, key: str, info: ObjectInfo | None = None) -> ObjectReader:
        if info is None:
            info = self.head(key)
        return S3Reader(self, key, info, info.version.rpartition("@")[0])

    def _get_range(self, key: str, start: int, end: int, etag: str | None) -> Any:
        extra = {"IfMatch": etag} if etag else {}
        response = self._call(
            "get_object", key, Key=self.prefix + key, Range=f"bytes={start}-{end - 1}", **extra
        )
        return response["Body"]

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Key": self.prefix + key}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            return self._call("get_object", key, **kwargs)["Body"].read()
        except OSError:
            raise
        except Exception as exc:  # the body broke off mid-stream
            raise _os_error(exc, key) from exc

    def _written(
        self, key: str, response: dict[str, Any], size: int, metadata: dict[str, str] | None
    ) -> ObjectInfo:
        """What a PUT or COPY made, from its response, without another HEAD. The response's
        Date stands in for Last-Modified: should they differ, the version merely fails to
        match a later listing's, which costs a HEAD, never a wrong answer."""
        etag = response.get("ETag") or response.get("CopyObjectResult", {}).get("ETag", "")
        modified = response.get("CopyObjectResult", {}).get("LastModified")
        if modified is None:
            date = response["ResponseMetadata"]["HTTPHeaders"].get("date")
            modified = parsedate_to_datetime(date) if date else datetime.now(UTC)
        seconds = int(modified.timestamp())
        return ObjectInfo(key, size, seconds * 1_000_000_000, f"{etag}@{seconds}", metadata)

    def put(self, key: str, data: bytes | BinaryIO, metadata: dict[str, str]) -> ObjectInfo:
        if isinstance(data, bytes | bytearray | memoryview):
            size = len(data)
        else:
            size = os.fstat(data.fileno()).st_size - data.tell()
        response = self._call(
            "put_object", key, Key=self.prefix + key, Body=data, Metadata=metadata
        )
        return self._written(key, response, size, metadata)

    def copy(self, source: str, target: str, metadata: dict[str, str] | None = None) -> ObjectInfo:
        copy_source = {"Bucket": self.bucket, "Key": self.prefix + source}
        extra: dict[str, Any] = {"MetadataDirective": "COPY"}
        if metadata is not None:
            extra = {"MetadataDirective": "REPLACE", "Metadata": metadata}
        origin = self.head(source)
        if origin.size > MAX_COPY:
            return self._copy_in_parts(source, target, origin.size, metadata)
        response = self._call(
            "copy_object", target, Key=self.prefix + target, CopySource=copy_source, **extra
        )
        kept = origin.metadata if metadata is None else metadata
        return self._written(target, response, origin.size, kept)

    def _copy_in_parts(
        self, source: str, target: str, size: int, metadata: dict[str, str] | None
    ) -> ObjectInfo:
        meta = self.head(source).metadata or {} if metadata is None else metadata
        upload_id = self.create_multipart(target, meta)
        parts = []
        try:
            for number, start in enumerate(range(0, size, COPY_PART), 1):
                end = min(size, start + COPY_PART) - 1
                response = self._call(
                    "upload_part_copy",
                    target,
                    Key=self.prefix + target,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": self.prefix + source},
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append(Part(number, response["CopyPartResult"]["ETag"]))
            return self.complete_multipart(target, upload_id, parts)
        except BaseException:
            self.abort_multipart(target, upload_id)
            raise

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=self.prefix + key)

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: list[str]) -> None:
        response = self._call(
            "delete_objects",
            keys[0],
            Delete={"Objects": [{"Key": self.prefix + k} for k in keys], "Quiet": True},
        )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise OSError(errno.EIO, f"delete failed: {first.get('Code')}", first.get("Key"))

    # -- multipart -----------------------------------------------------------------------

    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        response = self._call(
            "create_multipart_upload", key, Key=self.prefix + key, Metadata=metadata
        )
        return str(response["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        response = self._call(
            "upload_part",
            key,
            Key=self.prefix + key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return Part(number, response["ETag"])

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> ObjectInfo:
        self._call(
            "complete_multipart_upload",
            key,
            Key=self.prefix + key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": p.number, "ETag": p.etag}
                    for p in sorted(parts, key=lambda p: p.number)
                ]
            },
        )
        return self.head(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        # The endpoint may be what failed; bucket lifecycle rules reap leftover parts.
        with contextlib.suppress(OSError):
            self._call("abort_multipart_upload", key, Key=self.prefix + key, UploadId=upload_id)

    # -- listing -------------------------------------------------------------------------

    def list(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, limit: int = 1000
    ) -> ListPage:
        kwargs: dict[str, Any] = {"Prefix": self.prefix + prefix, "MaxKeys": limit}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        response = self._call("list_objects_v2", prefix, **kwargs)
        cut = len(self.prefix)
        page = ListPage(token=response.get("NextContinuationToken"))
        if not response.get("IsTruncated"):
            page.token = None
        for item in response.get("Contents", ()):
            key = item["Key"][cut:]
            page.objects.append(
                ObjectInfo(
                    key,
                    int(item["Size"]),
                    int(item["LastModified"].timestamp()) * 1_000_000_000,
                    self._version(item),
                )
            )
        page.prefixes = [p["Prefix"][cut:] for p in response.get("CommonPrefixes", ())]
        return page

    def close(self) -> None:
        self.client.close()


def _open(config: S3StoreConfig) -> S3Store:
    return S3Store(config)


S3_STORE = StoreType(
    name="s3",
    config=S3StoreConfig,
    open=_open,
    needs_network=lambda config: True,
    min_part_size=MIN_PART,
    summary="Any S3-compatible endpoint through boto3 (retries with backoff, timeouts).",
)
