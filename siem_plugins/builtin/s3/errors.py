"""What the S3 sink raises: :class:`SinkError`, made from botocore's failures by
:func:`to_sink_error`, with the S3 error code and the object's location, never a secret."""

from __future__ import annotations

from siem_plugins.kinds import SinkError as ContractSinkError

#: Failures that mean S3 could not be reached at all: looking for leftovers would only
#: fail the same way, after another round of retries (the sweep looks later).
UNREACHABLE_CODES = frozenset({"EndpointConnection", "ConnectTimeout"})

#: S3 error codes retrying cannot fix: the configuration or the account must change.
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
        "NoCredentials",
        "PartialCredentials",
        "ProfileNotFound",
        "KMS.NotFoundException",
        "KMS.DisabledException",
        # STS, for role_arn: bad base keys, a region where STS is turned off.
        "InvalidClientTokenId",
        "RegionDisabledException",
    }
)


class AssumeRoleError(Exception):
    """STS refused (or could not be asked) to let the sink assume its ``role_arn``.

    Raised from inside botocore's credential refresh, so it reaches the sink through the
    S3 call that needed the credentials; :func:`to_sink_error` then names the role and
    keeps STS's error code (``AccessDenied`` for a trust policy or an external id that
    does not match: permanent). The message never holds a credential.
    """

    def __init__(self, role_arn: str, code: str, message: str, status: int | None) -> None:
        super().__init__(f"could not assume role {role_arn}: {code}: {message}")
        self.role_arn = role_arn
        self.code = code
        self.status = status

    @classmethod
    def from_exception(cls, role_arn: str, exc: BaseException) -> AssumeRoleError:
        code, message, status = _error_code(exc)
        return cls(role_arn, code, message, status)


class SinkError(ContractSinkError):
    """An S3 request failed. The message names the object and the S3 error code.

    ``permanent`` is true when retrying cannot help (bad credentials, missing bucket,
    access denied): the pipeline then says so in its error message.
    """

    code: str

    def __init__(
        self,
        message: str,
        *,
        location: str,
        code: str,
        permanent: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message, location=location, code=code, permanent=permanent, status=status)


def _error_code(exc: BaseException) -> tuple[str, str, int | None]:
    """``(code, message, http status)`` of a botocore failure."""
    from botocore.exceptions import ClientError

    if isinstance(exc, AssumeRoleError):
        return exc.code, str(exc), exc.status
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or status or "Unknown")
        # HEAD responses have no body, so S3 reports only the status as the code.
        code = {"403": "AccessDenied", "404": "NotFound"}.get(code, code)
        return code, str(error.get("Message") or exc), status
    name = type(exc).__name__
    if name.endswith("Error") and name not in ("OSError", "ValueError"):
        name = name[: -len("Error")]
    return name, str(exc), None


def to_sink_error(
    exc: BaseException, location: str, *, secret: str | None = None, doing: str = ""
) -> SinkError:
    """``exc`` as a :class:`SinkError` about ``location`` (a ``SinkError`` is kept).

    ``doing`` says what failed (``"commit failed"``); ``secret`` is blanked out of the
    text should a proxy ever echo it.
    """
    if isinstance(exc, SinkError):
        return exc
    code, message, status = _error_code(exc)
    text = f"{location}: {doing + ': ' if doing else ''}{code}: {message}"
    if secret and len(secret) >= 8:
        # Defence in depth: no S3 error is known to echo the secret, but a proxy might.
        # (A very short "secret" would mangle ordinary words; real ones are 40 chars.)
        text = text.replace(secret, "***")
    return SinkError(
        text, location=location, code=code, permanent=code in PERMANENT_CODES, status=status
    )
