"""An in-process S3 server for tests: moto behind real HTTP, with programmable faults.

Tests talk to it over a real socket on 127.0.0.1, so the whole client stack (boto3,
botocore retries, the sink's own multipart uploads) runs exactly as in production. A
WSGI middleware in front of moto can fail, or drop the connection of, chosen requests,
before moto sees them or after moto carried them out (the server acted, the client never
learns it did), and it records every request so a test can assert that retries really
happened.

Where moto departs from S3 in ways a sink's clean-up depends on, the middleware makes it
answer as S3 does: ``ListMultipartUploads`` reports when each upload was really initiated
(moto reports a fixed date in 2010), sorted by key and then by initiation time, and honours
``max-uploads`` with ``key-marker`` / ``upload-id-marker`` pagination (moto returns one
page, whatever its size); and ``GetBucketNotificationConfiguration`` includes the
``EventBridgeConfiguration`` a ``PutBucketNotificationConfiguration`` turned on (moto
keeps it but leaves it out of its reply).

Set ``SIEM_TEST_S3_ENDPOINT`` to run the same tests against an external S3-compatible
endpoint instead (credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` if
set); fault injection is unavailable there.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import random
import re
import secrets
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ENV_ENDPOINT = "SIEM_TEST_S3_ENDPOINT"
REGION = "us-east-1"
DUMMY_KEY = "testing"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: What a fault does: ``error`` answers with an S3 error and moto never sees the request;
#: ``error-after`` lets moto carry the request out, then answers with the error instead of
#: moto's reply; ``reset-before`` / ``reset-after`` drop the connection without an answer,
#: before moto sees the request or after it carried it out.
FaultAction = Literal["error", "error-after", "reset-before", "reset-after"]
FAULT_ACTIONS: tuple[FaultAction, ...] = ("error", "error-after", "reset-before", "reset-after")


def external_endpoint() -> str | None:
    """The external S3 endpoint tests should use instead of moto, if configured."""
    return os.environ.get(ENV_ENDPOINT) or None


# --------------------------------------------------------------------------- operations


def s3_operation(
    method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str]
) -> str:
    """The S3 API operation a path-style request is, e.g. ``UploadPart``.

    Only the operations a sink and its tests use are told apart; anything else is
    ``<METHOD>Other`` so it still counts.
    """
    parts = path.lstrip("/").split("/", 1)
    on_object = len(parts) == 2 and parts[1] != ""
    if path.startswith("/moto-api"):
        return "MotoApi"
    if not parts[0]:
        return "ListBuckets" if method == "GET" else f"{method}Other"
    if on_object:
        if method == "PUT":
            if "partNumber" in query and "uploadId" in query:
                return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
            return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
        if method == "POST":
            if "uploads" in query:
                return "CreateMultipartUpload"
            if "uploadId" in query:
                return "CompleteMultipartUpload"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
        if method == "GET":
            return "ListParts" if "uploadId" in query else "GetObject"
        if method == "HEAD":
            return "HeadObject"
        return f"{method}Other"
    if method == "PUT":
        return "CreateBucket" if not query else f"PutBucket{next(iter(query)).title()}"
    if method == "DELETE":
        return "DeleteBucket" if not query else f"DeleteBucket{next(iter(query)).title()}"
    if method == "HEAD":
        return "HeadBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "GET":
        if "uploads" in query:
            return "ListMultipartUploads"
        if query.get("list-type") == ["2"]:
            return "ListObjectsV2"
        return (
            "ListObjects"
            if not query or "prefix" in query or "marker" in query
            else (f"GetBucket{next(iter(query)).title()}")
        )
    return f"{method}Other"


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Request:
    """One request the server saw (the body is not kept)."""

    method: str
    op: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    fault: str | None  # what was injected, if anything (a FaultAction)
    #: An STS request's form (``Action``, ``RoleArn``, ``ExternalId``, ...): STS sends its
    #: parameters in the body, so a test can see them only here. Empty for S3.
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class _Rule:
    remaining: int
    action: FaultAction
    status: int
    code: str
    message: str
    op: str | None
    method: str | None
    query_contains: str | None
    path_contains: str | None

    def matches(self, method: str, op: str, path: str, query: str) -> bool:
        return (
            self.remaining > 0
            and (self.op is None or self.op == op)
            and (self.method is None or self.method == method)
            and (self.query_contains is None or self.query_contains in query)
            and (self.path_contains is None or self.path_contains in path)
        )


@dataclass
class _Random:
    rate: float
    rng: random.Random
    status: int
    code: str
    ops: frozenset[str] | None
    actions: tuple[FaultAction, ...]


@dataclass
class Faults:
    """What the server should do wrong, and what it has seen. Thread-safe.

    Rules are consulted in the order they were added; each matching request uses up
    one of a rule's ``n`` turns. ``op`` is an S3 operation name as :func:`s3_operation`
    reports it (``UploadPart``, ``CompleteMultipartUpload``, ``PutObject``, ...), or an
    STS action (``AssumeRole``: moto's server answers STS at the same endpoint).

    Besides faults, two ways the server answers ``ListMultipartUploads`` can be set:
    :meth:`backdate_upload` (an upload that looks older than it is) and
    :meth:`upload_listing_page_size` (listings split into pages).
    """

    _rules: list[_Rule] = field(default_factory=list)
    _random: _Random | None = None
    _requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Server state rather than programming: kept by reset(), like moto's own uploads.
    _initiated: dict[str, float] = field(default_factory=dict)
    _page_size: int | None = None
    # Buckets whose last notification configuration turned EventBridge on.
    _event_bridge: set[str] = field(default_factory=set)

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        code: str = "SlowDown",
        message: str | None = None,
        op: str | None = None,
        method: str | None = None,
        query_contains: str | None = None,
        path_contains: str | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next ``n`` matching requests with an S3 error.

        By default moto never sees them. With ``after=True`` moto carries each one out
        first and only its reply is replaced by the error, as when a proxy or a load
        balancer fails after forwarding: a ``CreateMultipartUpload`` answered this way
        leaves an upload on the server whose id the client never learns.
        """
        with self._lock:
            self._rules.append(
                _Rule(
                    n,
                    "error-after" if after else "error",
                    status,
                    code,
                    message or f"injected {code}",
                    op,
                    method,
                    query_contains,
                    path_contains,
                )
            )

    def reset_connection_next(
        self,
        n: int = 1,
        *,
        when: Literal["before", "after"] = "before",
        op: str | None = None,
        method: str | None = None,
        query_contains: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Drop the connection of the next ``n`` matching requests without answering.

        ``before``: moto never sees the request. ``after``: moto carries it out, then
        the response is lost, as when a network path dies after the server committed.
        """
        action: Literal["reset-before", "reset-after"] = (
            "reset-before" if when == "before" else "reset-after"
        )
        with self._lock:
            self._rules.append(
                _Rule(n, action, 0, "", "", op, method, query_contains, path_contains)
            )

    def random_failure_rate(
        self,
        p: float,
        seed: int = 0,
        *,
        status: int = 503,
        code: str = "SlowDown",
        op: str | Collection[str] | None = None,
        actions: Sequence[FaultAction] = ("error",),
    ) -> None:
        """Fail each matching request with probability ``p`` (reproducible via ``seed``).

        ``op`` limits the faults to one operation or a collection of them (default: every
        request). ``actions`` are the kinds of fault to inject (see :data:`FaultAction`);
        with more than one, each fault picks one at random from the same seeded generator,
        e.g. ``actions=("error-after", "reset-after")`` for failures after moto acted.
        ``status`` and ``code`` are the error the ``error`` kinds answer with. Programmed
        rules (:meth:`fail_next`, :meth:`reset_connection_next`) take precedence.
        """
        chosen = tuple(actions)
        unknown = [a for a in chosen if a not in FAULT_ACTIONS]
        if not chosen or unknown:
            raise ValueError(f"actions must be some of {FAULT_ACTIONS}, got {chosen!r}")
        ops = None if op is None else frozenset([op] if isinstance(op, str) else op)
        with self._lock:
            self._random = (
                _Random(p, random.Random(seed), status, code, ops, chosen) if p > 0 else None
            )

    def backdate_upload(self, upload_id: str, seconds: float) -> None:
        """Make ``ListMultipartUploads`` report the upload as initiated ``seconds`` earlier
        than it was (to test clean-up of old uploads without waiting for them to age)."""
        with self._lock:
            if upload_id not in self._initiated:
                raise KeyError(f"no multipart upload {upload_id!r} was created on this server")
            self._initiated[upload_id] -= seconds

    def upload_listing_page_size(self, n: int | None) -> None:
        """Answer ``ListMultipartUploads`` in pages of at most ``n`` uploads (``None``:
        S3's 1000), as S3 does for a bucket with many open uploads, so a client that
        does not follow ``NextKeyMarker`` / ``NextUploadIdMarker`` misses some."""
        if n is not None and n < 1:
            raise ValueError(f"page size must be at least 1, got {n}")
        with self._lock:
            self._page_size = n

    def reset(self) -> None:
        """Forget all rules, the listing page size and recorded requests."""
        with self._lock:
            self._rules.clear()
            self._random = None
            self._page_size = None
            self._requests.clear()

    # ------------------------------------------------------------------ observations

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def counts(self) -> Counter[tuple[str, str]]:
        """Requests seen so far, by ``(method, op)`` (injected failures included)."""
        with self._lock:
            return Counter((r.method, r.op) for r in self._requests)

    def count(self, op: str, *, method: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for r in self._requests if r.op == op and (method is None or r.method == method)
            )

    def injected(self, op: str | None = None) -> int:
        """How many requests (of ``op``) got a fault."""
        with self._lock:
            return sum(
                1 for r in self._requests if r.fault is not None and (op is None or r.op == op)
            )

    def pending(self) -> int:
        """Turns left on the programmed rules (0 once every fault has fired)."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    # ------------------------------------------------------------------ middleware side

    def _decide(
        self,
        method: str,
        op: str,
        path: str,
        query: str,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
    ) -> _Rule | None:
        with self._lock:
            chosen: _Rule | None = None
            if op != "MotoApi":
                for rule in self._rules:
                    if rule.matches(method, op, path, query):
                        rule.remaining -= 1
                        chosen = rule
                        break
                rnd = self._random
                if (
                    chosen is None
                    and rnd is not None
                    and (rnd.ops is None or op in rnd.ops)
                    and rnd.rng.random() < rnd.rate
                ):
                    chosen = _Rule(
                        1,
                        rnd.actions[0] if len(rnd.actions) == 1 else rnd.rng.choice(rnd.actions),
                        rnd.status,
                        rnd.code,
                        f"injected {rnd.code}",
                        None,
                        None,
                        None,
                        None,
                    )
            self._requests.append(
                Request(
                    method,
                    op,
                    path,
                    query,
                    headers,
                    None if chosen is None else chosen.action,
                    params or {},
                )
            )
            return chosen

    def _observe(self, op: str, status: str, query: str, body: bytes) -> bytes:
        """What moto answered to a request it carried out, made as S3 would answer it."""
        if not status.startswith("200"):
            return body
        if op == "CreateMultipartUpload":
            found = re.search(rb"<UploadId>([^<]+)</UploadId>", body)
            if found:
                with self._lock:
                    self._initiated[found.group(1).decode()] = time.time()
            return body
        if op == "ListMultipartUploads":
            with self._lock:
                initiated = dict(self._initiated)
                page_size = self._page_size
            return _upload_listing(body, parse_qs(query), initiated, page_size)
        return body

    def _notification_put(self, bucket: str, request: bytes) -> None:
        """Remember whether a ``PutBucketNotificationConfiguration`` turns EventBridge on."""
        with self._lock:
            if b"<EventBridgeConfiguration" in request:
                self._event_bridge.add(bucket)
            else:
                self._event_bridge.discard(bucket)

    def _notification_reply(self, bucket: str, body: bytes) -> bytes:
        """moto's ``GetBucketNotificationConfiguration`` reply with EventBridge, as S3's."""
        with self._lock:
            on = bucket in self._event_bridge
        if not on or b"<EventBridgeConfiguration" in body:
            return body
        end = body.rfind(b"</NotificationConfiguration>")
        if end < 0:  # an empty configuration: <NotificationConfiguration/>
            return re.sub(
                rb"<NotificationConfiguration([^>]*)/>",
                rb"<NotificationConfiguration\1><EventBridgeConfiguration/>"
                rb"</NotificationConfiguration>",
                body,
            )
        return body[:end] + b"<EventBridgeConfiguration/>" + body[end:]


_UPLOAD = re.compile(rb"<Upload>.*?</Upload>", re.S)


def _tag(block: bytes, name: bytes) -> str:
    found = re.search(rb"<" + name + rb">([^<]*)</" + name + rb">", block)
    return html.unescape(found.group(1).decode()) if found else ""


def _upload_listing(
    body: bytes,
    query: Mapping[str, list[str]],
    initiated: Mapping[str, float],
    page_size: int | None,
) -> bytes:
    """moto's ListMultipartUploads reply with true initiation times, in S3's order
    (key, then initiation), from the markers on, at most ``max-uploads`` (and the
    configured page size) per page."""
    blocks = list(_UPLOAD.finditer(body))
    if not blocks:
        return body
    uploads = []
    for index, found in enumerate(blocks):
        block = found.group(0)
        upload_id = _tag(block, b"UploadId")
        when = initiated.get(upload_id)
        if when is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
            stamp += f".{int(when * 1000) % 1000:03d}Z"
            block = re.sub(
                rb"<Initiated>[^<]*</Initiated>", f"<Initiated>{stamp}</Initiated>".encode(), block
            )
        uploads.append((_tag(block, b"Key"), when or 0.0, index, upload_id, block))
    uploads.sort()
    # After the markers: the rest of the marker key's uploads (past upload-id-marker;
    # none without it), then every later key.
    key_marker = query.get("key-marker", [""])[0]
    id_marker = query.get("upload-id-marker", [""])[0]
    if key_marker:
        same = [u for u in uploads if u[0] == key_marker]
        ids = [u[3] for u in same]
        rest = same[ids.index(id_marker) + 1 :] if id_marker in ids else []
        uploads = rest + [u for u in uploads if u[0] > key_marker]
    limit = min(int(query.get("max-uploads", ["1000"])[0]), page_size or 1000)
    page, truncated = uploads[:limit], len(uploads) > limit
    head = body[: blocks[0].start()]
    tail = body[blocks[-1].end() :]
    head = re.sub(
        rb"<MaxUploads>\d*</MaxUploads>", f"<MaxUploads>{limit}</MaxUploads>".encode(), head
    )
    if truncated:
        last_key, last_id = page[-1][0], page[-1][3]
        markers = (
            f"<IsTruncated>true</IsTruncated><NextKeyMarker>{html.escape(last_key)}"
            f"</NextKeyMarker><NextUploadIdMarker>{html.escape(last_id)}</NextUploadIdMarker>"
        )
        head = re.sub(rb"<IsTruncated>[^<]*</IsTruncated>", markers.encode(), head)
    return head + b"".join(u[4] for u in page) + tail


def _sts_form(environ: dict[str, Any], headers: Mapping[str, str]) -> dict[str, str] | None:
    """The form of an STS request (moto's server answers STS at the same address), read
    and put back for moto; ``None`` for any other request. STS is told apart by the
    service its signature was made for."""
    if "/sts/aws4_request" not in headers.get("authorization", ""):
        return None
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in form.items()}


def _sts_error_body(code: str, message: str) -> bytes:
    """An error as STS (a query-protocol service) words it, so botocore reads its code."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>siem-fault-{secrets.token_hex(4)}</RequestId></ErrorResponse>"
    ).encode()


def _error_body(code: str, message: str, path: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{path}</Resource><RequestId>siem-fault-{secrets.token_hex(4)}</RequestId>"
        "</Error>"
    ).encode()


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class FaultMiddleware:
    """WSGI middleware: records each request and applies the :class:`Faults` rules."""

    def __init__(self, app: WSGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if name in environ:
                headers[name.replace("_", "-").lower()] = environ[name]
        params = _sts_form(environ, headers)
        if params is not None:
            op = params.get("Action", "STSOther")
        else:
            op = s3_operation(method, path, parse_qs(query, keep_blank_values=True), headers)
        rule = self.faults._decide(method, op, path, query, headers, params)
        bucket = path.lstrip("/").split("/", 1)[0]
        if rule is None and op == "PutBucketNotification":
            request = _read_body(environ)
            environ["wsgi.input"] = io.BytesIO(request)
            environ["CONTENT_LENGTH"] = str(len(request))
            status, reply_headers, body = _call(self.app, environ)
            if status.startswith("200"):
                self.faults._notification_put(bucket, request)
            start_response(status, reply_headers)
            return [body]
        if rule is None and op not in _OBSERVED:
            return self.app(environ, start_response)
        if rule is None or rule.action in ("error-after", "reset-after"):
            # moto carries the request out; its reply is read (see Faults._observe) and,
            # when a fault was injected, thrown away.
            status, reply_headers, body = _call(self.app, environ)
            body = self.faults._observe(op, status, query, body)
            if op == "GetBucketNotification" and status.startswith("200"):
                body = self.faults._notification_reply(bucket, body)
            if rule is None:
                reply_headers = [(k, v) for k, v in reply_headers if k.lower() != "content-length"]
                start_response(status, [*reply_headers, ("Content-Length", str(len(body)))])
                return [body]
        if rule.action in ("error", "error-after"):
            if rule.action == "error":
                _drain(environ)
            if method == "HEAD":
                body = b""
            elif params is not None:
                body = _sts_error_body(rule.code, rule.message)
            else:
                body = _error_body(rule.code, rule.message, path)
            start_response(
                f"{rule.status} {_REASONS.get(rule.status, 'Error')}",
                [
                    ("Content-Type", "application/xml"),
                    ("Content-Length", str(len(body))),
                    ("x-amz-request-id", "siem-fault"),
                ],
            )
            return [body]
        if rule.action == "reset-before":
            _drain(environ)
        _drop(environ)
        # werkzeug treats a ConnectionError from the app as a dropped client: no log, no reply.
        raise ConnectionAbortedError(f"siem test fault: dropped {method} {path}")


#: Operations whose replies the middleware reads (see Faults._observe).
_OBSERVED = frozenset({"CreateMultipartUpload", "ListMultipartUploads", "GetBucketNotification"})


def _call(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run ``app`` to the end: its status, headers and whole body."""
    reply: dict[str, Any] = {"status": "500 Internal Server Error", "headers": []}
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        reply["status"], reply["headers"] = status, headers
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return reply["status"], list(reply["headers"]), b"".join(chunks)


def _read_body(environ: dict[str, Any]) -> bytes:
    """The whole request body (small ones only: a bucket configuration)."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        return bytes(stream.read())
    return bytes(stream.read(int(environ.get("CONTENT_LENGTH") or 0)))


def _drain(environ: dict[str, Any]) -> None:
    """Read the request body so the client is not cut off mid-send (deterministic errors)."""
    stream = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if environ.get("wsgi.input_terminated"):
        while stream.read(65536):
            pass
        return
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            break
        length -= len(chunk)


def _drop(environ: dict[str, Any]) -> None:
    sock: socket.socket | None = environ.get("werkzeug.socket")
    if sock is None:  # pragma: no cover - only werkzeug's server is used here
        raise ConnectionAbortedError("cannot drop the connection: no werkzeug.socket")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- server


class S3Server:
    """An S3 endpoint for tests: in-process moto (default) or an external endpoint.

    Use as a context manager, or call :meth:`stop`. ``faults`` is ``None`` for an
    external endpoint.
    """

    def __init__(self, *, endpoint_url: str | None = None) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()
        self.faults: Faults | None = None
        if endpoint_url is not None:
            self.endpoint_url = endpoint_url.rstrip("/")
            self.external = True
            self.access_key_id = os.environ.get("AWS_ACCESS_KEY_ID", DUMMY_KEY)
            self.secret_access_key = os.environ.get("AWS_SECRET_ACCESS_KEY", DUMMY_KEY)
            self.region = os.environ.get("AWS_DEFAULT_REGION", REGION)
            return
        self.external = False
        self.access_key_id = DUMMY_KEY
        self.secret_access_key = DUMMY_KEY
        self.region = REGION
        self.faults = Faults()
        self._start()

    @classmethod
    def from_environment(cls) -> S3Server:
        """The external endpoint if ``SIEM_TEST_S3_ENDPOINT`` is set, else a fresh moto."""
        return cls(endpoint_url=external_endpoint())

    def _start(self) -> None:
        # Imported here: moto is a test-only dependency and slow to import.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            # One access-log line per request would drown test output.
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass

        assert self.faults is not None
        app = FaultMiddleware(DomainDispatcherApplication(create_backend_app), self.faults)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        host, port = self._server.server_address[:2]
        self.endpoint_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="siem-test-s3", daemon=True
        )
        self._thread.start()

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client for this endpoint (path-style; ``config`` adds to it).

        Without ``config`` the same client is returned each time: creating one costs
        ~0.2 s, and boto3 clients are thread-safe.
        """
        if not config:
            with self._client_lock:
                if self._client is None:
                    self._client = self._new_client()
                return self._client
        return self._new_client(**config)

    def _new_client(self, **config: Any) -> S3Client:
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "retries": {"mode": "standard", "max_attempts": 3},
        }
        options.update(config)
        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        ).client("s3", endpoint_url=self.endpoint_url, config=Config(**options))

    def sink_options(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """An ``s3`` sink table pointing at this endpoint (``extra`` adds or overrides)."""
        table: dict[str, Any] = {
            "type": "s3",
            "bucket": bucket,
            "region": self.region,
            "endpoint_url": self.endpoint_url,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }
        table.update(extra)
        return table

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name unless given); returns its name."""
        name = name or f"siem-test-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def empty_bucket(self, name: str) -> None:
        """Delete every object and open multipart upload in ``name`` (external cleanup)."""
        client = self.client()
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])

    def reset(self) -> None:
        """Clear faults, recorded requests and (for moto) every bucket."""
        if self.external:
            return
        assert self.faults is not None
        self.faults.reset()
        # endpoint_url is our own http://127.0.0.1 address, never user input.
        url = f"{self.endpoint_url}/moto-api/reset"
        request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()
        self.faults.reset()  # the reset request itself is not interesting

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> S3Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
