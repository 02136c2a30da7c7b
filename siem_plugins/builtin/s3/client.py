"""The botocore S3 client a sink talks through: one shared model loader, and the
retry policy, timeouts and addressing its settings ask for."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from siem_plugins import __version__, metrics

from .settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_loader_lock = threading.Lock()
_loader: Any = None


def _shared_loader() -> Any:
    """One botocore data loader for every sink: parsing the S3 model costs ~0.2 s per
    fresh session, and a config may build many sinks."""
    global _loader
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
        return _loader


def make_client(settings: S3Settings) -> S3Client:
    """An S3 client for ``settings``. Local only: credentials resolve on first use."""
    import botocore.session
    from botocore.config import Config

    # botocore directly rather than boto3.session.Session: boto3 appends its data path
    # to the (shared) loader on every session, and resources are not needed here.
    session = botocore.session.Session(profile=settings.profile)
    session.register_component("data_loader", _shared_loader())
    config: dict[str, Any] = {
        # total_max_attempts counts the first try, as max_attempts does in ~/.aws/config;
        # botocore's own "max_attempts" key would add one more.
        "retries": {"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "user_agent_extra": f"siem-plugins/{__version__}",
    }
    if settings.endpoint_url is not None:
        # S3-compatible stores rarely do virtual-host buckets, and many reject the
        # CRC checksums boto3 >= 1.36 sends by default.
        config["s3"] = {"addressing_style": "path"}
        config["request_checksum_calculation"] = "when_required"
        config["response_checksum_validation"] = "when_required"
    secret = settings.secret_access_key
    token = settings.session_token
    client = session.create_client(
        "s3",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=secret.reveal() if secret is not None else None,
        aws_session_token=token.reveal() if token is not None else None,
        config=Config(**config),
    )
    client.meta.events.register("request-created.s3", _count_retries)
    return cast("S3Client", client)


def _count_retries(request: Any, operation_name: str, **_: Any) -> None:
    """botocore makes each attempt of a call anew; from the second on it is a retry
    (``siem_request_retries_total``)."""
    attempt = (getattr(request, "context", None) or {}).get("retries", {}).get("attempt", 1)
    if attempt > 1:
        metrics.count_retry("s3", operation_name)
