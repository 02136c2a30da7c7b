"""The benchmark's events: generated once per size into a SQLite file by the real store.

``demo.generate`` already gives seed-shaped Device/Account events with accented names;
on top of it about one event in twenty gets a long ``details`` (0.3-3 KB) mixing
CJK, emoji and accented text, so record lengths vary the way a real audit trail's do
(a policy dump or a long list of failed checks next to one-line logins).

Next to each database the module keeps the *references* every case is checked against:
the NDJSON the stored bytes make (length, SHA-256), the RFC 5424 lines our SYSLOG
formatter must produce (length, SHA-256, and an order-independent digest for
multi-threaded rsyslog, which does not keep the input order), and that NDJSON as a
plain file for rsyslog to read.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from siem_plugins.demo import generate
from siem_plugins.events import canonicalize
from siem_plugins.storage import SQLiteStore
from siem_plugins.storage.connections import connect_sqlite

#: Bump when the generator changes: cached datasets with another version are rebuilt.
GENERATOR_VERSION = 2
ACCOUNT = "bench"
SEED = 20220715
#: What the benchmark's SYSLOG configuration puts in front of each body (local0.info,
#: no hostname, the formatter's default app name): the references are built from it.
SYSLOG_PRI = 134
SYSLOG_APP = "metadefender-it-access"
#: A log type the data never contains: the notifier pass of each sync scans the range
#: and sends nothing, so no mail work is mixed into the shipping numbers.
NOTIFY_NONE = "api_key_revoked"

_LONG_SHARE = 0.05
_WORDS = (
    "policy",
    "Compliance",
    "Antivirus",
    "Disk Encryption",
    "Firewall",
    "Patch Level",
    "Screen Lock",
    "Überprüfung",
    "conformité",
    "política",
    "コンプライアンス",
    "防火墙",
    "보안 정책",
    "проверка",
    "🔒",
    "✅",
    "⚠️",
    "naïve café",
    'quote "x"',
    "tab\there",
    "line\nbreak",
)


@dataclass(frozen=True)
class Dataset:
    """One generated size: the database and its references."""

    events: int
    db: Path
    ndjson: Path  # the stored bytes, one per line (rsyslog's input)
    ndjson_bytes: int
    ndjson_sha256: str
    syslog_bytes: int
    syslog_sha256: str
    syslog_multiset: int  # sum of per-line 64-bit hashes, mod 2**64
    min_record: int
    max_record: int
    unicode_share: float

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"


def events(count: int, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """``demo.generate`` with some long, multilingual ``details``."""
    rng = random.Random(seed ^ 0x5EED)
    for event in generate(count, seed=seed):
        if rng.random() < _LONG_SHARE:
            target = rng.randrange(300, 3000)
            parts = [event["details"]]
            size = len(parts[0])
            while size < target:
                word = rng.choice(_WORDS)
                parts.append(word)
                size += len(word) + 2
            event["details"] = ", ".join(parts)
        yield event


def line_hash(line: bytes) -> int:
    """64-bit hash of one output line (without its newline), for the multiset digest."""
    return int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "little")


def syslog_line(ts: str, log_type: str, body: bytes) -> bytes:
    """The RFC 5424 line the benchmark expects, built independently of the formatter."""
    return f"<{SYSLOG_PRI}>1 {ts} - {SYSLOG_APP} - {log_type[:32]} - ".encode() + body[1:-1]


def prepare(count: int, data_dir: Path, *, log: Any = print) -> Dataset:
    """The dataset of ``count`` events under ``data_dir``, generated if not cached."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stem = data_dir / f"events-v{GENERATOR_VERSION}-{count}"
    db = stem.with_suffix(".sqlite")
    meta_file = stem.with_suffix(".json")
    ndjson = stem.with_suffix(".ndjson")
    if meta_file.exists() and db.exists() and ndjson.exists():
        meta = json.loads(meta_file.read_text())
        return Dataset(db=db, ndjson=ndjson, **meta)
    for stale in data_dir.glob(f"{stem.name}.*"):
        stale.unlink()
    log(f"generating {count:,} events into {db} (cached for later runs) ...")
    store = SQLiteStore(db)
    try:
        # Large commits: ingest speed is not what this benchmark measures.
        store.append(ACCOUNT, (canonicalize(e) for e in events(count)), chunk=20_000)
    finally:
        store.close()
    dataset = _references(count, db, ndjson)
    meta = {k: v for k, v in asdict(dataset).items() if k not in ("db", "ndjson")}
    meta_file.write_text(json.dumps(meta, indent=2))
    return dataset


def _references(count: int, db: Path, ndjson: Path) -> Dataset:
    conn = connect_sqlite(db)
    nd_sha = hashlib.sha256()
    sys_sha = hashlib.sha256()
    nd_bytes = sys_bytes = 0
    multiset = 0
    n = 0
    shortest, longest, with_unicode = 1 << 30, 0, 0
    try:
        cur = conn.execute(
            "SELECT ts, log_type, body FROM siem_event WHERE account=? ORDER BY id", (ACCOUNT,)
        )
        with open(ndjson, "wb") as out:
            while rows := cur.fetchmany(10_000):
                nd = b"".join([r[2] + b"\n" for r in rows])
                out.write(nd)
                nd_sha.update(nd)
                nd_bytes += len(nd)
                for ts, log_type, body in rows:
                    line = syslog_line(ts, log_type, body)
                    sys_sha.update(line + b"\n")
                    sys_bytes += len(line) + 1
                    multiset = (multiset + line_hash(line)) & 0xFFFF_FFFF_FFFF_FFFF
                    shortest = min(shortest, len(body))
                    longest = max(longest, len(body))
                    with_unicode += not body.isascii()
                n += len(rows)
    finally:
        conn.close()
    if n != count:
        raise RuntimeError(f"{db}: expected {count} events, found {n}")
    return Dataset(
        events=count,
        db=db,
        ndjson=ndjson,
        ndjson_bytes=nd_bytes,
        ndjson_sha256=nd_sha.hexdigest(),
        syslog_bytes=sys_bytes,
        syslog_sha256=sys_sha.hexdigest(),
        syslog_multiset=multiset,
        min_record=shortest,
        max_record=longest,
        unicode_share=round(with_unicode / max(n, 1), 3),
    )


def warm(dataset: Dataset) -> None:
    """Read the files once so every case starts from the page cache, not the disk."""
    for path in (dataset.db, dataset.ndjson):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
