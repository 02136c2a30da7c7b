"""The botocore S3 client a sink talks through: one shared model loader, the retry
policy, timeouts and addressing its settings ask for, and, with ``role_arn``, the role's
temporary credentials, refreshed before they expire.

Refreshing is botocore's own: :class:`botocore.credentials.DeferredRefreshableCredentials`
over an :class:`botocore.credentials.AssumeRoleCredentialFetcher`, the pair botocore
builds itself for a ``role_arn`` in ``~/.aws/config``. The deferred kind makes no request
until the first S3 call (building a sink stays local, like the static keys), and every
request signer asks it for credentials, so a refresh happens under botocore's lock, in
whichever thread needs it, with no timer of ours to stop or to race with a request: once
fewer than ``advisory`` seconds are left one caller refreshes while the others go on with
the old credentials; under ``mandatory`` seconds everyone waits for the new ones.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from siem_plugins import __version__, metrics

from .errors import AssumeRoleError
from .loader import shared_loader
from .settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: A clock: the current time, timezone-aware (botocore's own is ``_local_now``).
Clock = Callable[[], datetime.datetime]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_client(settings: S3Settings, *, clock: Clock | None = None) -> S3Client:
    """An S3 client for ``settings``. Local only: credentials resolve on first use.

    ``clock`` is the time the role's credentials are judged by (tests move it forward
    to make them expire); the default is the real time."""
    import botocore.credentials
    from botocore.config import Config

    session = _session(settings.profile)
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
    keys = {
        "aws_access_key_id": settings.access_key_id,
        "aws_secret_access_key": secret.reveal() if secret is not None else None,
        "aws_session_token": token.reveal() if token is not None else None,
    }
    if settings.role_arn is not None:
        # S3 sees only the role's credentials; the keys (or the default chain, or the
        # profile) are the base ones STS is asked with.
        role_session = _session(None)
        role_session.register_component(
            "credential_provider",
            botocore.credentials.CredentialResolver(
                [
                    cast(
                        "botocore.credentials.CredentialProvider",
                        _AssumedRole(
                            role_credentials(settings, session, keys, Config(**config), clock)
                        ),
                    )
                ]
            ),
        )
        session, keys = role_session, {}
    client = session.create_client(
        "s3",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        config=Config(**config),
        **keys,
    )
    client.meta.events.register("request-created.s3", _count_retries)
    return cast("S3Client", client)


def _session(profile: str | None) -> Any:
    import botocore.session

    # botocore directly rather than boto3.session.Session: boto3 appends its data path
    # to the (shared) loader on every session, and resources are not needed here.
    session = botocore.session.Session(profile=profile)
    session.register_component("data_loader", shared_loader())
    return session


def refresh_windows(duration: int) -> tuple[int, int]:
    """``(advisory, mandatory)``: seconds before expiry at which the role's credentials
    are refreshed in the background, and at which every request waits for new ones.

    botocore's defaults (15 and 10 minutes) suit its default hour-long session; for a
    15-minute session they would mean an AssumeRole for every request. A third and a
    sixth of the session, at most botocore's defaults, refresh a 900 s session after
    10 minutes and an hour-long one after 45, as botocore would.
    """
    return min(900, duration // 3), min(600, duration // 6)


class _NoCache(dict[str, Any]):
    """The fetcher's cache, kept empty: the refreshable credentials already hold the
    current ones, and a cached answer the fetcher still thinks fresh would turn a refresh
    botocore asked for into a no-op."""

    def __contains__(self, key: object) -> bool:
        return False

    def __setitem__(self, key: str, value: Any) -> None:
        pass


class _SourceCredentials:
    """The base credentials STS is asked with, resolved when first needed (the default
    chain may ask the instance metadata service): static keys, or the base session's
    chain, whose instance-role credentials botocore refreshes on its own."""

    def __init__(self, session: Any, keys: dict[str, str | None]) -> None:
        self._session = session
        self._keys = keys

    def get_frozen_credentials(self) -> Any:
        from botocore.credentials import Credentials
        from botocore.exceptions import NoCredentialsError

        access_key, secret_key = (
            self._keys.get("aws_access_key_id"),
            self._keys.get("aws_secret_access_key"),
        )
        if access_key is not None and secret_key is not None:
            token = self._keys.get("aws_session_token")
            return Credentials(access_key, secret_key, token).get_frozen_credentials()
        credentials = self._session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        return credentials.get_frozen_credentials()


def role_credentials(
    settings: S3Settings,
    base_session: Any,
    keys: dict[str, str | None],
    config: Any,
    clock: Clock | None = None,
) -> Any:
    """The role's refreshable credentials: no request until first asked for."""
    from botocore.credentials import AssumeRoleCredentialFetcher

    assert settings.role_arn is not None
    extra: dict[str, Any] = {
        "RoleSessionName": settings.role_session_name,
        "DurationSeconds": settings.role_duration,
    }
    if settings.external_id is not None:
        extra["ExternalId"] = settings.external_id
    advisory, mandatory = refresh_windows(settings.role_duration)
    fetcher = AssumeRoleCredentialFetcher(
        functools.partial(
            base_session.create_client,
            region_name=settings.region,
            endpoint_url=settings.sts_endpoint_url,
            config=config,
        ),
        _SourceCredentials(base_session, keys),
        settings.role_arn,
        extra_args=extra,
        cache=_NoCache(),
        expiry_window_seconds=advisory,
    )
    role_arn = settings.role_arn

    def assume() -> dict[str, Any]:
        try:
            credentials: dict[str, Any] = fetcher.fetch_credentials()
        except Exception as exc:
            raise AssumeRoleError.from_exception(role_arn, exc) from exc
        return credentials

    return _role_credentials_class()(assume, advisory, mandatory, clock or _now)


class _AssumedRole:
    """A credential provider that always has the role's credentials (the S3 client's
    only one: no other source may be used by accident)."""

    METHOD = "assume-role"
    CANONICAL_NAME = "siem-plugins-role"

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def load(self) -> Any:
        return self._credentials


def _count_retries(request: Any, operation_name: str, **_: Any) -> None:
    """botocore makes each attempt of a call anew; from the second on it is a retry
    (``siem_request_retries_total``)."""
    attempt = (getattr(request, "context", None) or {}).get("retries", {}).get("attempt", 1)
    if attempt > 1:
        metrics.count_retry("s3", operation_name)


@functools.cache
def _role_credentials_class() -> type:
    """Made on first use: botocore is imported only once a client is built."""
    from botocore.credentials import DeferredRefreshableCredentials

    class RoleCredentials(DeferredRefreshableCredentials):
        """botocore's deferred refreshable credentials with windows fitted to the
        session's length (:func:`refresh_windows`); botocore reads them from these
        two attributes (its class defaults are 15 and 10 minutes)."""

        def __init__(
            self, refresh: Callable[[], dict[str, Any]], advisory: int, mandatory: int, clock: Clock
        ) -> None:
            super().__init__(refresh, "assume-role", time_fetcher=clock)
            self._advisory_refresh_timeout = advisory
            self._mandatory_refresh_timeout = mandatory

    return RoleCredentials
