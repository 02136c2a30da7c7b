"""Example drop-in plugin: the ``splunk_hec`` sink, objects sent to a Splunk HTTP Event
Collector's raw endpoint. Standard library only: copy it into ``hooks/`` and configure::

    [integration.sink]
    type = "splunk_hec"
    url = "https://splunk.example.com:8088"
    token = "${SPLUNK_HEC_TOKEN}"
    sourcetype = "_json"          # for format = "json"; any sourcetype that breaks on \\n
    index = "security"            # optional
    max_request_bytes = 1048576   # optional, default 1 MiB

Each object's lines are POSTed to ``{url}/services/collector/raw`` with ``Authorization:
Splunk <token>``, in requests of at most ``max_request_bytes`` that always end at a line
break (a gzip-compressed integration is decompressed on the way). The object key is
the events' ``source``.

HEC is a *stream* destination (``stream = True``, docs/plugins.md#stream-sinks), not
all-or-nothing: a request Splunk accepted cannot be taken back. An object that fits one
request is sent at commit, so it arrives whole or not at all; a larger one is sent as it
is written, always in whole lines, and a failure part-way leaves its first chunks
indexed. The pipeline then replays the same object (same key, same bytes), so lines can
arrive twice: deduplicate on ``source`` plus the event's content or id.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import zlib
from urllib.parse import urlencode, urlsplit

from siem_plugins import (
    ObjectMeta,
    ObjectReceipt,
    ObjectWriter,
    Options,
    SinkBase,
    SinkSpec,
    hookimpl,
)

MiB = 1024 * 1024
#: Each request is built in memory: a larger one is a typo, not a tuning choice.
MAX_REQUEST_BYTES = 256 * MiB


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        # urllib would resend the token to wherever a redirect points, and turn the POST
        # into a GET without the events: a 3xx is an error instead.
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class HECError(RuntimeError):
    """Splunk refused a request or could not be reached. Never contains the token."""


class HECSink(SinkBase):
    # HEC cannot take back what it accepted: a replayed object is sent again.
    stream = True

    def __init__(
        self,
        url: str,
        token: str,
        *,
        sourcetype: str,
        index: str | None = None,
        max_request_bytes: int = MiB,
        timeout: float = 30.0,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"expected an http(s):// URL, got {url!r}")
        self.endpoint = url.rstrip("/") + "/services/collector/raw"
        self._token = token
        self.params = {"sourcetype": sourcetype, **({"index": index} if index else {})}
        self.max_request_bytes = max_request_bytes
        self.timeout = timeout

    @classmethod
    def from_options(cls, options: Options) -> HECSink:
        try:
            return cls(
                options.string("url", required=True),
                options.string("token", required=True),  # a Secret: never shown in logs
                sourcetype=options.string("sourcetype", "_json"),
                index=options.string("index"),
                max_request_bytes=options.integer(
                    "max_request_bytes", MiB, min=1024, max=MAX_REQUEST_BYTES
                ),
                timeout=options.number("timeout", 30.0, min=0.1, max=600),
            )
        except ValueError as exc:
            raise options.error("url", str(exc)) from None

    def post(self, body: bytes, source: str) -> None:
        """One HEC request. Raises :class:`HECError` unless Splunk answers 2xx."""
        url = f"{self.endpoint}?{urlencode({**self.params, 'source': source})}"
        headers = {"Authorization": f"Splunk {self._token}", "Content-Type": "text/plain"}
        # S310: the scheme was checked to be http(s) in __init__.
        request = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read()
                return
        except urllib.error.HTTPError as exc:
            reply = exc.read(300).decode("utf-8", "replace") if exc.fp else ""
            message = f"{self.endpoint}: HTTP {exc.code}: {reply or exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            message = f"{self.endpoint}: {getattr(exc, 'reason', exc)}"
        raise HECError(message.replace(self._token, "***"))

    def identity(self) -> str:
        # Where events go is the endpoint *and* the index/sourcetype: two integrations
        # of one account may share an endpoint when they feed different indexes.
        return f"{self.endpoint}?{urlencode(self.params)}"

    def open(self, key: str, meta: ObjectMeta) -> ObjectWriter:
        if meta.content_encoding not in (None, "gzip"):
            raise ValueError(f"cannot send {meta.content_encoding!r}-encoded objects to HEC")
        return _HECWriter(self, key, meta)

    def probe(self) -> None:
        # An empty request checks URL and token without indexing anything: Splunk
        # answers 400 "No data" (code 5) to a valid token, 401/403 to a bad one.
        try:
            self.post(b"", ".siem-plugins-probe")
        except HECError as exc:
            if '"code":5' not in str(exc).replace(" ", ""):
                raise


class _HECWriter(ObjectWriter):
    def __init__(self, sink: HECSink, key: str, meta: ObjectMeta) -> None:
        self.sink, self.key, self.meta, self.size = sink, key, meta, 0
        self.buffer = bytearray()
        gzip = meta.content_encoding == "gzip"
        self.inflate = zlib.decompressobj(wbits=31) if gzip else None

    def write(self, data: bytes) -> None:
        self.size += len(data)  # the receipt reports what the pipeline wrote
        self.buffer += self.inflate.decompress(data) if self.inflate is not None else data
        limit = self.sink.max_request_bytes
        while len(self.buffer) > limit:
            # Cut at the last line break within the limit (or after an oversized line):
            # an event split across two requests would become two broken events.
            cut = self.buffer.rfind(b"\n", 0, limit) + 1 or self.buffer.find(b"\n", limit) + 1
            if not cut:
                return  # one long line, still arriving
            self._send(cut)

    def _send(self, n: int) -> None:
        self.sink.post(bytes(self.buffer[:n]), self.key)
        del self.buffer[:n]

    def commit(self) -> ObjectReceipt:
        if self.inflate is not None:
            self.buffer += self.inflate.flush()
            if not self.inflate.eof:
                raise HECError(f"{self.key}: truncated gzip stream")
        if self.buffer:
            self._send(len(self.buffer))
        location = f"{self.sink.endpoint}?{urlencode({'source': self.key})}"
        return ObjectReceipt(self.key, location, self.size, self.meta)

    def abort(self) -> None:
        self.buffer.clear()  # what was sent stays sent: see the module docstring


@hookimpl
def siem_register_sinks() -> list[SinkSpec]:
    return [
        SinkSpec(
            name="splunk_hec",
            factory=HECSink.from_options,
            description="Splunk HTTP Event Collector raw endpoint (url = ..., token = ...)",
        )
    ]
