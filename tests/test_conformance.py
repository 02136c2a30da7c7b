"""The built-in plugins pass the same conformance suites third-party authors use.

Each class below is what a plugin author writes: subclass a suite, provide its fixtures.
Where a built-in promises more than the generic contract (S3's content type, SMTP
envelope recipients), a few extra tests sit beside the suite's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.builtin.email import EmailNotifier
from siem_plugins.builtin.jsonfmt import JSONFormatter
from siem_plugins.builtin.local import LocalSink
from siem_plugins.builtin.outbox import OutboxNotifier
from siem_plugins.builtin.s3 import S3Sink
from siem_plugins.builtin.syslog import FRAMINGS, SyslogFormatter
from siem_plugins.events import canonicalize
from siem_plugins.kinds import Formatter, Notifier, Sink, Source
from siem_plugins.options import Options
from siem_plugins.storage import PostgresStore, SQLiteStore
from siem_plugins.testing import (
    FormatterConformance,
    NotifierConformance,
    SinkConformance,
    SourceConformance,
)
from siem_plugins.testing.conformance import (
    INJECTION_TEXTS,
    digest_of,
    events_from_dicts,
    hostile_event_dicts,
)
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer

MiB = 1024 * 1024

# --------------------------------------------------------------------------- sinks


class TestLocalSink(SinkConformance):
    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        return tmp_path / "bucket"

    @pytest.fixture
    def sink(self, root: Path) -> Iterator[Sink]:
        sink = LocalSink.from_options(Options({"path": str(root), "prefix": "logs"}))
        yield sink
        sink.close()

    @pytest.fixture
    def read_object(self, root: Path) -> Any:
        def read(key: str) -> bytes | None:
            path = root / "logs" / key
            return path.read_bytes() if path.is_file() else None

        return read

    @pytest.fixture
    def list_keys(self, root: Path) -> Any:
        # Every file, hidden temporaries included, relative to the prefix folder: a
        # leftover ".name.tmp" or a probe file fails the suite.
        def keys() -> list[str]:
            base = root / "logs"
            return sorted(
                str(p.relative_to(base)) if p.is_relative_to(base) else str(p)
                for p in root.rglob("*")
                if p.is_file()
            )

        return keys


class TestS3Sink(SinkConformance):
    # Above the 5 MiB part size: three parts, the last one short.
    large_object_size = 11 * MiB

    @pytest.fixture
    def sink(self, s3_server: S3Server, s3_bucket: str) -> Iterator[Sink]:
        table = s3_server.sink_options(s3_bucket, prefix="siem", part_size=5 * MiB)
        sink = S3Sink.from_options(Options(table))
        yield sink
        sink.close()

    @pytest.fixture
    def read_object(self, s3_server: S3Server, s3_bucket: str) -> Any:
        client = s3_server.client()

        def read(key: str) -> bytes | None:
            try:
                body = client.get_object(Bucket=s3_bucket, Key=f"siem/{key}")["Body"]
            except client.exceptions.NoSuchKey:
                return None
            data: bytes = body.read()
            return data

        return read

    @pytest.fixture
    def list_keys(self, s3_server: S3Server, s3_bucket: str) -> Any:
        # Objects and unfinished multipart uploads (invisible, but billed).
        client = s3_server.client()

        def keys() -> list[str]:
            objects = client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
            uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
            return sorted(
                [o["Key"].removeprefix("siem/") for o in objects]
                + [f"unfinished upload of {u['Key']}" for u in uploads]
            )

        return keys

    @pytest.fixture
    def read_metadata(self, s3_server: S3Server, s3_bucket: str) -> Any:
        def read(key: str) -> Mapping[str, str]:
            head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"siem/{key}")
            return head["Metadata"]

        return read

    def test_content_type_is_stored(self, sink: Sink, s3_server: S3Server, s3_bucket: str) -> None:
        key = self.key()
        self.write(sink, key, self.meta(), [b"{}\n"])
        head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"siem/{key}")
        assert head["ContentType"] == "application/x-ndjson"
        assert head["ContentLength"] == 3


# --------------------------------------------------------------------------- formatters


class TestJSONFormatter(FormatterConformance):
    # The canonical bytes escape U+2028, U+2029 and NEL, and JSON every C0 control.
    escapes_unicode_line_breaks = True

    @pytest.fixture
    def formatter(self) -> Formatter:
        return JSONFormatter.from_options(Options({}))


class TestSyslogFormatter(FormatterConformance):
    escapes_unicode_line_breaks = True

    @pytest.fixture(params=FRAMINGS)
    def formatter(self, request: pytest.FixtureRequest) -> Formatter:
        return SyslogFormatter.from_options(Options({"framing": request.param}))


# --------------------------------------------------------------------------- notifiers

SENDER = "SIEM <siem@example.com>"
ADMINS = ["admin@example.com", "Second Admin <second@example.com>"]


class TestEmailNotifier(NotifierConformance):
    delivers_mail = True

    @pytest.fixture
    def notifier(self, smtp_server: SMTPServer) -> Notifier:
        table = {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "security": "none",
            "from": SENDER,
            "to": ADMINS,
            "timeout": 10,
        }
        return EmailNotifier.from_options(Options(table, path="integration[0].notify"))

    @pytest.fixture
    def delivered(self, smtp_server: SMTPServer) -> Any:
        return lambda: [m.data for m in smtp_server.messages]

    def test_event_text_cannot_add_envelope_recipients(
        self, notifier: Notifier, smtp_server: SMTPServer
    ) -> None:
        notifier.notify(digest_of(events_from_dicts(hostile_event_dicts(INJECTION_TEXTS))))
        (mail,) = smtp_server.messages
        assert mail.rcpt_tos == ["admin@example.com", "second@example.com"]
        assert mail.mail_from == "siem@example.com"


class TestOutboxNotifier(NotifierConformance):
    delivers_mail = True

    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        return tmp_path / "outbox"

    @pytest.fixture
    def notifier(self, folder: Path) -> Notifier:
        table = {"path": str(folder), "from": SENDER, "to": ADMINS}
        return OutboxNotifier.from_options(Options(table))

    @pytest.fixture
    def delivered(self, folder: Path) -> Any:
        # Sorted by name = by id range: the order the digests were sent in.
        return lambda: [p.read_bytes() for p in sorted(folder.rglob("*.eml"))]


# --------------------------------------------------------------------------- sources


def _appender(store: SQLiteStore | PostgresStore) -> Any:
    def append(account: str, dicts: Sequence[Mapping[str, Any]]) -> list[int]:
        result = store.append(account, [canonicalize(d) for d in dicts])
        assert result.first_id is not None and result.last_id is not None
        return list(range(result.first_id, result.last_id + 1))

    return append


class TestSQLiteStore(SourceConformance):
    @pytest.fixture
    def source(self, siem_store: SQLiteStore) -> Source:
        return siem_store

    @pytest.fixture
    def append(self, siem_store: SQLiteStore) -> Any:
        return _appender(siem_store)


class TestPostgresStore(SourceConformance):
    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[PostgresStore]:
        store = PostgresStore(pg_url)
        yield store
        store.close()

    @pytest.fixture
    def source(self, store: PostgresStore) -> Source:
        return store

    @pytest.fixture
    def append(self, store: PostgresStore) -> Any:
        return _appender(store)
