"""``siem-plugins verify``: proof, from the outside, that the bucket matches the store.

For one integration, the objects in its sink's account folder whose keys have the
shipper's shape and the integration's extension are listed (with their metadata: one
``HEAD`` per object on S3) and compared with the event store and the delivery state
(docs/delivery.md#proving-it-verify):

* every event of the account up to the sink cursor is in some object's id range, unless
  it is a dead letter (set aside: reported, not a gap);
* no two objects' ranges meet (``dead-letters replay`` objects, marked ``siem-replay``,
  overlap on purpose and are accounted for instead);
* each object's ``siem-count`` plus ``siem-set-aside`` is the number of the account's
  events in its range;
* nothing of the shape is there that the state does not explain: an object beyond the
  cursor is allowed only at the pending intent's key (a crash between the upload and the
  cursor update), and no multipart upload of the shape is left open;
* with ``deep``, every object is read and its lines are compared byte for byte with the
  store's events formatted again by the integration's formatter.

The state is read before and after the listing; if a sync changed it meanwhile, the
listing is taken again, so a running ``siem-plugins run`` causes no false finding.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from isal import isal_zlib

from siem_plugins.builtin.local import LocalSink
from siem_plugins.builtin.s3 import S3Sink, to_sink_error
from siem_plugins.events import Event
from siem_plugins.keys import parse_key
from siem_plugins.kinds import Intent
from siem_plugins.storage import REPLAY, SINK, StateStore

if TYPE_CHECKING:
    from siem_plugins.runtime import Integration, Runtime

log = logging.getLogger(__name__)

#: Kinds of finding: each makes ``verify`` exit 1.
GAP = "gap"
OVERLAP = "overlap"
DUPLICATE = "duplicate"
COUNT = "count"
METADATA = "metadata"
CONTENT = "content"
UNKNOWN = "unknown"
UPLOAD = "upload"
FINDING_KINDS = (GAP, OVERLAP, DUPLICATE, COUNT, METADATA, CONTENT, UNKNOWN, UPLOAD)
#: Kinds of information: reported, never a failure.
PENDING = "pending"
SET_ASIDE = "set-aside"
REPLAYED = "replay"
BACKLOG = "backlog"
LEFTOVER = "leftover"
IGNORED = "ignored"

#: Concurrent ``HEAD`` requests (botocore's pool holds 10 connections).
HEAD_THREADS = 8
#: Bytes asked of the bucket, and given out by the decompressor, at a time.
CHUNK = 1 << 20
#: The listing is taken again at most this often when a sync changes the state meanwhile.
SNAPSHOT_ATTEMPTS = 3
_GZIP_WBITS = 16 + 15


@dataclass(frozen=True)
class Finding:
    """One thing ``verify`` found (or, in :attr:`Report.info`, noted).

    :ivar kind: one of :data:`FINDING_KINDS`, or an information kind (``pending``,
        ``set-aside``, ``replay``, ``backlog``, ``leftover``, ``ignored``).
    :ivar keys: the objects (or uploads) concerned, as locations (``s3://bucket/key``).
    :ivar first_id: the first event id concerned, when ids are.
    :ivar last_id: the last event id concerned.
    :ivar events: how many events are concerned, when that is known.
    """

    kind: str
    message: str
    keys: tuple[str, ...] = ()
    first_id: int | None = None
    last_id: int | None = None
    events: int | None = None


@dataclass
class Report:
    """What ``verify`` found for one integration.

    :ivar skipped: why the integration was not verified (a sink ``verify`` cannot read).
    :ivar error: why verifying failed (the bucket or the store could not be read).
    :ivar objects: objects of the integration found (replay objects included).
    :ivar events: events those objects hold, by their metadata (``None``: the sink
        keeps no metadata).
    """

    integration: str
    account: str
    sink: str
    deep: bool
    cursor: int = 0
    objects: int = 0
    events: int | None = None
    findings: list[Finding] = field(default_factory=list)
    info: list[Finding] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing found and nothing failed (a skipped integration is ok: nothing was
        looked at; the caller decides whether that is acceptable)."""
        return not self.findings and self.error is None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


class VerifyError(RuntimeError):
    """The bucket or the store could not be read: nothing can be proved."""


# --------------------------------------------------------------------------- the bucket


@dataclass(frozen=True)
class Stored:
    """One object as the bucket shows it. ``metadata`` is ``None`` when the sink keeps
    none (``local``); ``encoding`` is its ``Content-Encoding``."""

    key: str
    location: str
    metadata: Mapping[str, str] | None
    encoding: str | None


@dataclass(frozen=True)
class Leftover:
    """Something unfinished in the account's folder: an open multipart upload, or a
    ``local`` sink's temporary file."""

    key: str
    location: str
    what: str


class Bucket(Protocol):
    """What ``verify`` reads a sink's objects through. Keys are relative to the sink's
    own prefix, as the pipeline names them."""

    keeps_metadata: bool

    def location(self, key: str) -> str: ...
    def keys(self, folder: str) -> list[str]: ...
    def head(self, key: str) -> Stored | None: ...
    def read(self, key: str) -> Iterator[bytes]: ...
    def leftovers(self, folder: str) -> list[Leftover]: ...


class S3Bucket:
    """An ``s3`` sink's objects: ``ListObjectsV2``, one ``HEAD`` per object, ``GET``
    for ``--deep``, and ``ListMultipartUploads``, through the sink's own client."""

    keeps_metadata = True

    def __init__(self, sink: S3Sink) -> None:
        self.client = sink.client
        self.bucket = sink.bucket
        self.prefix = sink.prefix
        secret = sink.settings.secret_access_key
        self._secret = secret.reveal() if secret is not None else None

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _error(self, exc: Exception, key: str, doing: str) -> VerifyError:
        error = to_sink_error(exc, self.location(key), secret=self._secret, doing=doing)
        return VerifyError(str(error))

    def keys(self, folder: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + folder):
                keys.extend(o["Key"][len(self.prefix) :] for o in page.get("Contents", []))
        except Exception as exc:
            raise self._error(exc, folder, "could not list the objects") from exc
        return keys

    def head(self, key: str) -> Stored | None:
        from botocore.exceptions import ClientError

        try:
            reply = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None  # deleted since it was listed: it is not there
            raise self._error(exc, key, "could not read the object's metadata") from exc
        except Exception as exc:
            raise self._error(exc, key, "could not read the object's metadata") from exc
        return Stored(
            key, self.location(key), reply.get("Metadata", {}), reply.get("ContentEncoding")
        )

    def read(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        except Exception as exc:
            raise self._error(exc, key, "could not read the object") from exc
        try:
            yield from body.iter_chunks(CHUNK)
        except Exception as exc:
            raise self._error(exc, key, "could not read the object") from exc
        finally:
            body.close()

    def leftovers(self, folder: str) -> list[Leftover]:
        out: list[Leftover] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + folder):
                for upload in page.get("Uploads", []):
                    key = upload.get("Key", "")[len(self.prefix) :]
                    initiated = upload.get("Initiated")
                    when = f" initiated {initiated:%Y-%m-%d %H:%M:%S %Z}" if initiated else ""
                    out.append(Leftover(key, self.location(key), f"open multipart upload{when}"))
        except Exception as exc:
            raise self._error(exc, folder, "could not list the multipart uploads") from exc
        return out


class LocalFolder:
    """A ``local`` sink's objects: files under its folder. They carry no metadata, so
    ranges come from the keys and counts only from ``--deep``."""

    keeps_metadata = False

    def __init__(self, sink: LocalSink) -> None:
        self.base = sink.root / sink.prefix

    def location(self, key: str) -> str:
        return str(self.base / key)

    def _files(self, folder: str) -> Iterator[Path]:
        top = self.base / folder
        if top.is_dir():
            yield from (p for p in sorted(top.rglob("*")) if p.is_file())

    def keys(self, folder: str) -> list[str]:
        return [
            p.relative_to(self.base).as_posix()
            for p in self._files(folder)
            if not p.name.startswith(".")
        ]

    def head(self, key: str) -> Stored | None:
        path = self.base / key
        if not path.is_file():
            return None
        return Stored(key, str(path), None, "gzip" if key.endswith(".gz") else None)

    def read(self, key: str) -> Iterator[bytes]:
        try:
            with open(self.base / key, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        except OSError as exc:
            raise VerifyError(f"{self.location(key)}: could not read the object: {exc}") from exc

    def leftovers(self, folder: str) -> list[Leftover]:
        out = []
        for path in self._files(folder):
            # The sink's temporary files are ".NAME.RANDOM.tmp" beside NAME.
            name, dot, _ = path.name.removeprefix(".").removesuffix(".tmp").rpartition(".")
            if path.name.startswith(".") and path.name.endswith(".tmp") and dot:
                key = path.with_name(name).relative_to(self.base).as_posix()
                out.append(Leftover(key, str(path), "temporary file of an unfinished object"))
        return out


def bucket_of(integ: Integration) -> Bucket | None:
    """How ``verify`` reads the integration's sink, or ``None`` for a sink it cannot
    read (a plugin's, a stream)."""
    if isinstance(integ.sink, S3Sink):
        return S3Bucket(integ.sink)
    if isinstance(integ.sink, LocalSink):
        return LocalFolder(integ.sink)
    return None


# --------------------------------------------------------------------------- objects


@dataclass
class _Object:
    """An object of the integration, as its key and metadata describe it."""

    key: str
    location: str
    first_id: int
    last_id: int
    encoding: str | None
    count: int | None = None  # None: no metadata
    set_aside: int = 0
    replay: bool = False
    pending: bool = False


@dataclass(frozen=True)
class _State:
    """What the delivery state says, read in one go before and after the listing."""

    cursor: int
    pending: Intent | None
    pending_replay: Intent | None
    dead_letters: tuple[int, ...]


def _state(state: StateStore, name: str) -> _State:
    return _State(
        state.cursor(name, SINK),
        state.pending(name, SINK),
        state.pending(name, REPLAY),
        tuple(d.event_id for d in state.dead_letters(name)),
    )


def _extensions(rt: Runtime, integ: Integration) -> set[str]:
    """The extensions of the integration's objects: its own and, after a change of
    ``compression``, the other one (``json`` beside ``json.gz``), unless another
    integration writes that one to the same place."""
    base = integ.formatter.extension
    other = base if integ.extension != base else base + ".gz"
    taken = any(
        i is not integ
        and i.extension == other
        and i.config.account == integ.config.account
        and i.sink.identity() == integ.sink.identity()
        for i in rt.integrations
    )
    return {integ.extension} if taken else {integ.extension, other}


def _ints(metadata: Mapping[str, str], *names: str) -> list[int] | None:
    try:
        return [int(metadata[n]) for n in names]
    except (KeyError, ValueError):
        return None


# --------------------------------------------------------------------------- reading


class _Unreadable(Exception):
    """An object's bytes are not what its encoding says (not gzip, truncated)."""


def _decoded(chunks: Iterator[bytes], encoding: str | None) -> Iterator[bytes]:
    """An object's content from its stored bytes, at most :data:`CHUNK` at a time."""
    if not encoding:
        yield from chunks
        return
    if encoding != "gzip":
        raise _Unreadable(f"unknown Content-Encoding {encoding!r}")
    d = isal_zlib.decompressobj(wbits=_GZIP_WBITS)
    for chunk in chunks:
        data = chunk
        while data:
            try:
                out = d.decompress(data, CHUNK)
            except Exception as exc:  # isal's IsalError: not gzip, or corrupt
                raise _Unreadable(f"not valid gzip: {exc}") from None
            if out:
                yield out
            if d.eof:
                if d.unused_data:
                    raise _Unreadable("bytes after the end of the gzip stream")
                data = b""
            else:
                data = d.unconsumed_tail
    if not d.eof:
        raise _Unreadable("the gzip stream is truncated")


@contextlib.contextmanager
def _closing(batches: Iterator[Any]) -> Iterator[Iterator[Any]]:
    """``batches``, closed when the block ends (a source's generator holds a database
    cursor until then, and a comparison stops at the first difference)."""
    try:
        yield batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


class _Reader:
    """The front of a stream of bytes: compare and consume, never holding much more
    than what is being compared (a chunk at most beyond it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self._end = False
        self.offset = 0  # bytes consumed
        self.lines = 0  # lines consumed

    def _fill(self, n: int) -> None:
        while len(self._buf) < n and not self._end:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._end = True
            else:
                self._buf += chunk

    def startswith(self, data: bytes) -> bool:
        self._fill(len(data))
        return self._buf.startswith(data)

    def common(self, data: bytes) -> tuple[int, bool]:
        """How many bytes of ``data`` the stream starts with, and whether the stream
        ends there."""
        self._fill(len(data))
        n = min(len(data), len(self._buf))
        lo = 0
        while lo < n and self._buf[lo] == data[lo]:
            lo += 1
        return lo, lo == len(self._buf) and self._end

    def consume(self, n: int) -> None:
        self._fill(n)
        self.lines += self._buf.count(b"\n", 0, n)
        del self._buf[:n]
        self.offset += n

    def at_end(self) -> bool:
        self._fill(1)
        return not self._buf

    def rest(self) -> int:
        """Consume everything left; how many bytes that was."""
        n = len(self._buf)
        self._buf.clear()
        for chunk in self._chunks:
            n += len(chunk)
        self._end = True
        return n


# --------------------------------------------------------------------------- verifying


class _Verifier:
    def __init__(self, rt: Runtime, integ: Integration, bucket: Bucket, deep: bool) -> None:
        self.rt = rt
        self.integ = integ
        self.bucket = bucket
        self.deep = deep
        self.account = integ.config.account
        self.source = rt.source
        self.report = Report(integ.name, self.account, bucket.location(f"{self.account}/"), deep)

    # ------------------------------------------------------------------ helpers

    def find(self, kind: str, message: str, keys: Iterable[str] = (), **ids: int | None) -> None:
        self.report.findings.append(Finding(kind, message, tuple(keys), **ids))

    def note(self, kind: str, message: str, keys: Iterable[str] = (), **ids: int | None) -> None:
        self.report.info.append(Finding(kind, message, tuple(keys), **ids))

    def _events(self, first: int, last: int) -> Iterator[Event]:
        with _closing(
            self.source.read(self.account, first, last, batch_size=self.integ.config.batch_size)
        ) as batches:
            for batch in batches:
                yield from batch

    def _ids(self, first: int, last: int) -> list[int]:
        return [e.id for e in self._events(first, last)]

    def _count(self, first: int, last: int, expected: int) -> int:
        """The account's events with ``first <= id <= last``. One aggregate of the
        source when there are ``expected`` of them (the usual case), else a count."""
        if expected > 0:
            rng = self.source.plan(
                self.account, first - 1, max_events=expected, max_bytes=sys.maxsize
            )
            if rng is not None and rng.count == expected and rng.last_id == last:
                return expected
        return len(self._ids(first, last))

    # ------------------------------------------------------------------ the steps

    def run(self) -> Report:
        state = self.rt.state
        for _ in range(SNAPSHOT_ATTEMPTS):
            before = _state(state, self.integ.name)
            stored, leftovers, ignored = self._inventory()
            after = _state(state, self.integ.name)
            if before == after:
                break
        else:
            raise VerifyError(
                "the delivery state changed during each of "
                f"{SNAPSHOT_ATTEMPTS} listings (a sync is running); try again"
            )
        st = after
        self.report.cursor = st.cursor
        if ignored:
            self.note(
                IGNORED,
                f"{ignored} other file(s) in the folder: not of this integration's key "
                "shape and extension",
                events=ignored,
            )
        objects = self._classify(stored, st)
        originals = [o for o in objects if not o.replay]
        replays = [o for o in objects if o.replay]
        self.report.objects = len(objects)
        if self.bucket.keeps_metadata:
            self.report.events = sum(o.count or 0 for o in objects)
        representatives = self._duplicates(originals)
        self._overlaps(representatives)
        # Dead letters beyond the cursor belong to the pending intent's object.
        dead = set(st.dead_letters)
        self._gaps(representatives, st.cursor, dead)
        if self.bucket.keeps_metadata:
            for obj in originals:
                self._check_count(obj)
            self._account_set_aside(representatives, replays, dead)
        self._leftovers(leftovers, st)
        self._info(st, replays, {i for i in dead if i <= st.cursor})
        if self.deep:
            self._deep(objects, representatives, replays, dead)
        return self.report

    def _inventory(self) -> tuple[list[Stored], list[Leftover], int]:
        folder = f"{self.account}/"
        extensions = _extensions(self.rt, self.integ)
        keys: list[str] = []
        ignored = 0
        for key in self.bucket.keys(folder):
            parts = parse_key(key)
            if parts is None or parts.account != self.account or parts.extension not in extensions:
                ignored += 1
            else:
                keys.append(key)
        with ThreadPoolExecutor(HEAD_THREADS, thread_name_prefix="siem-verify") as pool:
            stored = [s for s in pool.map(self.bucket.head, keys) if s is not None]
        leftovers = []
        for left in self.bucket.leftovers(folder):
            parts = parse_key(left.key)
            if (
                parts is not None
                and parts.account == self.account
                and parts.extension in extensions
            ):
                leftovers.append(left)
        return stored, leftovers, ignored

    def _classify(self, stored: list[Stored], st: _State) -> list[_Object]:
        """The objects the store explains; the others are reported (``unknown``,
        ``metadata``) and left out of the checks that follow."""
        objects = []
        pending_key = st.pending.key if st.pending is not None else None
        replay_key = st.pending_replay.key if st.pending_replay is not None else None
        for s in stored:
            parts = parse_key(s.key)
            assert parts is not None
            obj = _Object(s.key, s.location, parts.first_id, parts.last_id, s.encoding)
            if s.metadata is not None and not self._read_metadata(obj, s.metadata):
                continue
            if obj.encoding != ("gzip" if s.key.endswith(".gz") else None):
                self.find(
                    METADATA,
                    f"{s.location}: Content-Encoding {obj.encoding or 'none'} does not "
                    "match its extension",
                    [s.location],
                )
            if obj.key == pending_key or (obj.replay and obj.key == replay_key):
                obj.pending = True
            elif obj.last_id > st.cursor:
                self.find(
                    UNKNOWN,
                    f"{s.location}: ids {obj.first_id}-{obj.last_id} go beyond the sink "
                    f"cursor ({st.cursor}) and no pending intent names this key",
                    [s.location],
                    first_id=obj.first_id,
                    last_id=obj.last_id,
                )
                continue
            objects.append(obj)
        return objects

    def _read_metadata(self, obj: _Object, metadata: Mapping[str, str]) -> bool:
        where = obj.location
        ids = _ints(metadata, "siem-first-id", "siem-last-id", "siem-count")
        if ids is None:
            self.find(UNKNOWN, f"{where}: no siem-first-id/-last-id/-count metadata", [where])
            return False
        first, last, count = ids
        written_by = metadata.get("siem-integration")
        account = metadata.get("siem-account")
        if written_by != self.integ.name or account != self.account:
            self.find(
                UNKNOWN,
                f"{where}: written by integration {written_by!r} for account {account!r}, "
                f"not {self.integ.name!r} for {self.account!r}",
                [where],
            )
            return False
        (set_aside,) = _ints(metadata, "siem-set-aside") or [0]
        obj.count, obj.set_aside = count, set_aside
        obj.replay = metadata.get("siem-replay") == "1"
        if (first, last) != (obj.first_id, obj.last_id):
            self.find(
                METADATA,
                f"{where}: the key says ids {obj.first_id}-{obj.last_id}, the metadata "
                f"{first}-{last}",
                [where],
                first_id=obj.first_id,
                last_id=obj.last_id,
            )
        fmt = metadata.get("siem-format")
        if fmt != self.integ.config.format_name:
            self.find(
                METADATA,
                f"{where}: format {fmt!r}, the integration writes "
                f"{self.integ.config.format_name!r}",
                [where],
            )
        return True

    def _duplicates(self, originals: list[_Object]) -> list[_Object]:
        """One object per id range; every range held by more than one key is reported."""
        by_range: dict[tuple[int, int], list[_Object]] = {}
        for obj in originals:
            by_range.setdefault((obj.first_id, obj.last_id), []).append(obj)
        for (first, last), same in sorted(by_range.items()):
            if len(same) > 1:
                where = sorted(o.location for o in same)
                self.find(
                    DUPLICATE,
                    f"ids {first}-{last} are in {len(same)} objects: {', '.join(where)}",
                    where,
                    first_id=first,
                    last_id=last,
                )
        return sorted(
            (min(same, key=lambda o: o.key) for same in by_range.values()),
            key=lambda o: (o.first_id, o.last_id),
        )

    def _overlaps(self, objects: list[_Object]) -> None:
        active: list[_Object] = []
        for obj in objects:
            active = [a for a in active if a.last_id >= obj.first_id]
            for a in active:
                last = min(a.last_id, obj.last_id)
                self.find(
                    OVERLAP,
                    f"{a.location} (ids {a.first_id}-{a.last_id}) and {obj.location} "
                    f"(ids {obj.first_id}-{obj.last_id}) both cover ids {obj.first_id}-{last}",
                    [a.location, obj.location],
                    first_id=obj.first_id,
                    last_id=last,
                )
            active.append(obj)

    def _gaps(self, objects: list[_Object], cursor: int, dead: set[int]) -> None:
        """The account's events up to the cursor in no object's range (dead letters
        aside): one finding per stretch between two objects."""
        uncovered: list[tuple[int, int]] = []
        upto = 0  # every id up to here is covered (or looked at)
        for obj in objects:
            if obj.first_id > upto + 1:
                uncovered.append((upto + 1, min(obj.first_id - 1, cursor)))
            upto = max(upto, obj.last_id)
            if upto >= cursor:
                break
        if upto < cursor:
            uncovered.append((upto + 1, cursor))
        for lo, hi in uncovered:
            if lo > hi:
                continue
            probe = self.source.plan(self.account, lo - 1, max_events=1, max_bytes=sys.maxsize)
            if probe is None or probe.first_id > hi:
                continue  # the usual case: only other accounts' ids between two objects
            missing = [i for i in self._ids(lo, hi) if i not in dead]
            if missing:
                self.find(
                    GAP,
                    f"{len(missing)} event(s), ids {missing[0]}-{missing[-1]}, are in no object",
                    first_id=missing[0],
                    last_id=missing[-1],
                    events=len(missing),
                )

    def _check_count(self, obj: _Object) -> None:
        assert obj.count is not None
        expected = obj.count + obj.set_aside
        have = self._count(obj.first_id, obj.last_id, expected)
        if have != expected:
            aside = f" + {obj.set_aside} set aside" if obj.set_aside else ""
            self.find(
                COUNT,
                f"{obj.location}: its metadata says {obj.count} events{aside} for ids "
                f"{obj.first_id}-{obj.last_id}; the store has {have} events of account "
                f"{self.account!r} there",
                [obj.location],
                first_id=obj.first_id,
                last_id=obj.last_id,
                events=have,
            )

    def _account_set_aside(
        self, originals: list[_Object], replays: list[_Object], dead: set[int]
    ) -> None:
        """Every event an object left out is a dead letter still, or in one replay
        object: by the counts (``--deep`` says which events)."""
        left_out = sum(o.set_aside for o in originals)
        in_ranges = sum(1 for i in dead if any(o.first_id <= i <= o.last_id for o in originals))
        replayed = sum(r.count or 0 for r in replays if not r.pending)
        if left_out != in_ranges + replayed:
            self.find(
                COUNT,
                f"the objects left out {left_out} event(s) (siem-set-aside); "
                f"{in_ranges} are dead letters and replay objects hold {replayed}",
                [r.location for r in replays],
                events=left_out,
            )

    def _leftovers(self, leftovers: list[Leftover], st: _State) -> None:
        pending = {i.key for i in (st.pending, st.pending_replay) if i is not None}
        for left in leftovers:
            if left.key in pending:
                self.note(
                    PENDING, f"{left.location}: {left.what} of the pending intent", [left.location]
                )
            elif isinstance(self.bucket, LocalFolder):
                self.note(
                    LEFTOVER,
                    f"{left.location}: {left.what} (readers ignore it; it can be deleted)",
                    [left.location],
                )
            else:
                self.find(
                    UPLOAD,
                    f"{left.location}: {left.what}, billed until aborted (the sink's sweep "
                    "aborts it after abandoned_upload_age, if the sink still writes this "
                    "extension; else a lifecycle rule or AbortMultipartUpload)",
                    [left.location],
                )

    def _info(self, st: _State, replays: list[_Object], dead: set[int]) -> None:
        for intent in (st.pending, st.pending_replay):
            if intent is None:
                continue
            where = self.bucket.location(intent.key)
            self.note(
                PENDING,
                f"{where}: the pending {'replay ' if intent.destination == REPLAY else ''}"
                f"intent for ids {intent.first_id}-{intent.last_id} (a sync in progress, or "
                "one that stopped before moving the cursor: the next one writes it again)",
                [where],
                first_id=intent.first_id,
                last_id=intent.last_id,
            )
        if dead:
            ids = sorted(dead)
            shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
            self.note(
                SET_ASIDE,
                f"{len(ids)} event(s) set aside as dead letters, not in the bucket yet "
                f"(ids {shown}): `siem-plugins dead-letters list`, then `dead-letters replay`",
                first_id=ids[0],
                last_id=ids[-1],
                events=len(ids),
            )
        for r in replays:
            self.note(
                REPLAYED,
                f"{r.location}: {r.count} set-aside event(s) shipped by `dead-letters "
                "replay` (its range overlaps other objects' on purpose)",
                [r.location],
                first_id=r.first_id,
                last_id=r.last_id,
                events=r.count,
            )
        rng = self.source.plan(
            self.account, st.cursor, max_events=sys.maxsize, max_bytes=sys.maxsize
        )
        if rng is not None:
            self.note(
                BACKLOG,
                f"{rng.count} event(s) after the sink cursor ({st.cursor}) are not shipped "
                "yet: the next sync ships them",
                first_id=rng.first_id,
                last_id=rng.last_id,
                events=rng.count,
            )

    # ------------------------------------------------------------------ --deep

    def _deep(
        self,
        objects: list[_Object],
        representatives: list[_Object],
        replays: list[_Object],
        dead: set[int],
    ) -> None:
        """Read every object and compare it with the store's events formatted again.

        An object nothing was left out of is compared as a whole (its bytes against the
        formatter's output for its range); one with events left out, line by line, which
        also says which events it left out. Those must each be a dead letter still or in
        exactly one replay object, whose lines must be exactly such events."""
        reps = {id(o) for o in representatives}
        left_out: dict[int, _Object] = {}
        for obj in objects:
            if obj.replay:
                continue
            skipped = self._deep_original(obj, dead)
            if skipped is not None and id(obj) in reps:
                left_out.update((i, obj) for i in skipped)
        shipped: dict[int, list[_Object]] = {}
        for r in replays:
            for i in self._deep_replay(r, set(left_out)):
                shipped.setdefault(i, []).append(r)
        for i, obj in sorted(left_out.items()):
            by = [r for r in shipped.get(i, []) if not r.pending]
            where = [obj.location, *(r.location for r in by)]
            if len(by) > 1:
                self.find(
                    DUPLICATE,
                    f"event {i} is in {len(by)} replay objects: "
                    + ", ".join(r.location for r in by),
                    where,
                    first_id=i,
                    last_id=i,
                )
            elif by and i in dead:
                self.find(
                    DUPLICATE,
                    f"event {i} is in {by[0].location} and still a dead letter (a next "
                    "`dead-letters replay` would ship it again)",
                    where,
                    first_id=i,
                    last_id=i,
                )
            elif i not in dead and not shipped.get(i):
                self.find(
                    GAP,
                    f"event {i} is left out of {obj.location} but is neither a dead letter "
                    "nor in a replay object",
                    where,
                    first_id=i,
                    last_id=i,
                    events=1,
                )

    def _deep_original(self, obj: _Object, dead: set[int]) -> set[int] | None:
        """Check one object's content; the ids it leaves out (``None`` if it could not
        be told)."""
        try:
            whole = (
                obj.set_aside == 0
                if obj.count is not None
                else not any(obj.first_id <= i <= obj.last_id for i in dead)
            )
            if whole and self._compare_whole(obj):
                return set()
            return self._compare_lines(obj)
        except _Unreadable as exc:
            self.find(CONTENT, f"{obj.location}: {exc}", [obj.location])
            return None

    def _content(self, obj: _Object) -> _Reader:
        return _Reader(_decoded(self.bucket.read(obj.key), obj.encoding))

    def _compare_whole(self, obj: _Object) -> bool:
        """The object's content against the formatter's output for its whole range;
        ``False`` (not a finding) if the formatter cannot format an event of it now,
        so that it is compared line by line instead."""
        fmt, source = self.integ.formatter, self.source
        args = (self.account, obj.first_id, obj.last_id)
        size = self.integ.config.batch_size
        reader = self._content(obj)
        read_raw, format_raw = source.read_raw, fmt.format_raw
        batches: Iterator[Any]
        if read_raw is not None and format_raw is not None:
            batches = read_raw(*args, batch_size=size)
            render: Callable[[Any], bytes] = format_raw
        else:
            batches = source.read(*args, batch_size=size)
            render = fmt.format
        events = 0
        with _closing(batches):
            for batch in batches:
                try:
                    expected = render(batch)
                except Exception:
                    return False
                if not reader.startswith(expected):
                    at, ended = reader.common(expected)
                    line = reader.lines + expected.count(b"\n", 0, at) + 1
                    event = self._nth(obj, events + expected.count(b"\n", 0, at))
                    what = (
                        f"ends at byte {reader.offset + at}, before line {line}: the "
                        f"store's events go on with event {event}"
                        if ended
                        else f"differs from the store's events at byte {reader.offset + at} "
                        f"(line {line}, event {event})"
                    )
                    self.find(
                        CONTENT,
                        f"{obj.location}: {what}",
                        [obj.location],
                        first_id=event,
                        last_id=event,
                    )
                    reader.rest()
                    return True
                reader.consume(len(expected))
                events += len(batch)
        if not reader.at_end():
            extra = reader.rest()
            self.find(
                CONTENT,
                f"{obj.location}: {extra} byte(s) after line {reader.lines} that are not "
                f"events of ids {obj.first_id}-{obj.last_id}",
                [obj.location],
            )
        return True

    def _nth(self, obj: _Object, n: int) -> int | None:
        """The id of the ``n``-th (from 0) event of the object's range."""
        for i, event in enumerate(self._events(obj.first_id, obj.last_id)):
            if i == n:
                return event.id
        return None

    def _match(self, reader: _Reader, events: Iterable[Event]) -> tuple[list[int], list[int]]:
        """Which ``events`` the stream holds, in order, each as the formatter writes it
        (it formats each event alone: formatters are batch-independent); the others.
        Greedy, which is exact: an event is taken whenever the next line is it."""
        fmt = self.integ.formatter
        held: list[int] = []
        skipped: list[int] = []
        for event in events:
            try:
                line = fmt.format([event])
            except Exception:
                skipped.append(event.id)
                continue
            if line and reader.startswith(line):
                reader.consume(len(line))
                held.append(event.id)
            else:
                skipped.append(event.id)
        return held, skipped

    def _compare_lines(self, obj: _Object) -> set[int]:
        reader = self._content(obj)
        held, skipped = self._match(reader, self._events(obj.first_id, obj.last_id))
        if not reader.at_end():
            self.find(
                CONTENT,
                f"{obj.location}: line {reader.lines + 1} (byte {reader.offset}) is not one "
                f"of the store's events of ids {obj.first_id}-{obj.last_id} in order",
                [obj.location],
            )
            reader.rest()
        elif obj.count is not None and (len(held), len(skipped)) != (obj.count, obj.set_aside):
            self.find(
                CONTENT,
                f"{obj.location}: holds {len(held)} events and leaves out {len(skipped)} "
                f"(ids {_short(skipped)}); its metadata says {obj.count} and "
                f"{obj.set_aside}",
                [obj.location],
            )
        return set(skipped)

    def _deep_replay(self, r: _Object, left_out: set[int]) -> list[int]:
        """A replay object's events: each must be one the objects of its range left out."""
        wanted = {i for i in left_out if r.first_id <= i <= r.last_id}
        try:
            reader = self._content(r)
            events = (e for e in self._events(r.first_id, r.last_id) if e.id in wanted)
            held, _ = self._match(reader, events)
            if not reader.at_end():
                self.find(
                    CONTENT,
                    f"{r.location}: line {reader.lines + 1} of this replay object is not an "
                    f"event the objects of ids {r.first_id}-{r.last_id} left out",
                    [r.location],
                )
                reader.rest()
            elif r.count is not None and len(held) != r.count:
                self.find(
                    CONTENT,
                    f"{r.location}: holds {len(held)} events; its metadata says {r.count}",
                    [r.location],
                )
        except _Unreadable as exc:
            self.find(CONTENT, f"{r.location}: {exc}", [r.location])
            return []
        return held


def _short(ids: list[int], limit: int = 10) -> str:
    return ", ".join(map(str, ids[:limit])) + (", ..." if len(ids) > limit else "") or "none"


# --------------------------------------------------------------------------- entry points


def verify_integration(rt: Runtime, integ: Integration, *, deep: bool = False) -> Report:
    """Verify one integration's objects against the store and the delivery state."""
    bucket = bucket_of(integ)
    if bucket is None:
        report = Report(integ.name, integ.config.account, integ.sink.describe(), deep)
        report.skipped = f"cannot verify a {integ.config.sink_name} sink"
        return report
    verifier = _Verifier(rt, integ, bucket, deep)
    try:
        return verifier.run()
    except VerifyError as exc:
        verifier.report.error = str(exc)
    except Exception as exc:  # the store failed: one line, and the other integrations
        log.debug("verifying %s failed", integ.name, exc_info=True)
        verifier.report.error = f"could not read the store: {type(exc).__name__}: " + " ".join(
            str(exc).split()
        )
    return verifier.report


def render(report: Report) -> list[str]:
    """A report as text lines: a status line, the findings, then the information."""
    r = report
    where = f"{r.sink} (account {r.account})"
    if r.skipped:
        return [f"{r.integration}: NOT VERIFIED: {r.skipped} ({where})"]
    if r.error:
        return [f"{r.integration}: ERROR: {r.error}"]
    events = f"{r.events} events" if r.events is not None else "no metadata"
    shipped = f"{r.objects} object(s), {events}, sink cursor {r.cursor}"
    if r.ok:
        head = f"{r.integration}: clean{' (deep)' if r.deep else ''}: {shipped}; {where}"
    else:
        head = f"{r.integration}: {len(r.findings)} finding(s): {shipped}; {where}"
    lines = [head]
    lines += [f"  {f.kind.upper()}: {f.message}" for f in r.findings]
    lines += [f"  info ({f.kind}): {f.message}" for f in r.info]
    return lines
