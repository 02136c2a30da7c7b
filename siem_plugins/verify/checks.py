"""The checks of ``verify`` made from the listing: what is in the bucket against the
cursor, the pending intents, the dead letters and the store's counts."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siem_plugins.compress import SUFFIXES, encoding_of
from siem_plugins.keys import parse_key
from siem_plugins.kinds import Intent
from siem_plugins.storage import REPLAY, SINK, StateStore

from .buckets import Leftover, LocalFolder, Stored, bucket_of
from .context import StoredObject
from .deep import DeepChecks
from .report import (
    BACKLOG,
    COUNT,
    DUPLICATE,
    GAP,
    IGNORED,
    LEFTOVER,
    METADATA,
    OVERLAP,
    PENDING,
    REPLAYED,
    SET_ASIDE,
    UNKNOWN,
    UPLOAD,
    Report,
    VerifyError,
)

if TYPE_CHECKING:
    from siem_plugins.runtime import Integration, Runtime

log = logging.getLogger("siem_plugins.verify")

#: Concurrent ``HEAD`` requests (botocore's pool holds 10 connections).
HEAD_THREADS = 8
#: The listing is taken again at most this often when a sync changes the state meanwhile.
SNAPSHOT_ATTEMPTS = 3


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
    ``compression``, the others (``json`` and ``json.zst`` beside ``json.gz``), unless
    another integration writes that one to the same place."""
    base = integ.formatter.extension
    others = {base + suffix for suffix in SUFFIXES.values()} - {integ.extension}
    taken = {
        i.extension
        for i in rt.integrations
        if i is not integ
        and i.config.account == integ.config.account
        and i.sink.identity() == integ.sink.identity()
    }
    return {integ.extension} | (others - taken)


def _ints(metadata: Mapping[str, str], *names: str) -> list[int] | None:
    try:
        return [int(metadata[n]) for n in names]
    except (KeyError, ValueError):
        return None


class Verifier(DeepChecks):
    """Verifies one integration: :meth:`run`."""

    def run(self) -> Report:
        """List the bucket (again while a sync changes the state), run every check, and
        return the report; raises :class:`VerifyError` if the bucket cannot be read."""
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
            self.check_content(objects, representatives, replays, dead)
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

    def _classify(self, stored: list[Stored], st: _State) -> list[StoredObject]:
        """The objects the store explains; the others are reported (``unknown``,
        ``metadata``) and left out of the checks that follow."""
        objects = []
        pending_key = st.pending.key if st.pending is not None else None
        replay_key = st.pending_replay.key if st.pending_replay is not None else None
        for s in stored:
            parts = parse_key(s.key)
            assert parts is not None
            obj = StoredObject(s.key, s.location, parts.first_id, parts.last_id, s.encoding)
            if s.metadata is not None and not self._read_metadata(obj, s.metadata):
                continue
            if obj.encoding != encoding_of(s.key):
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

    def _read_metadata(self, obj: StoredObject, metadata: Mapping[str, str]) -> bool:
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
        job = metadata.get("siem-replay-job")
        if job:
            self.note(
                REPLAYED,
                f"{where}: a second copy of ids {first}-{last}, written by replay job "
                f"{job!r} (`siem-plugins replay list`); not part of the checks",
                [where],
                first_id=first,
                last_id=last,
                events=count,
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

    def _duplicates(self, originals: list[StoredObject]) -> list[StoredObject]:
        """One object per id range; every range held by more than one key is reported."""
        by_range: dict[tuple[int, int], list[StoredObject]] = {}
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

    def _overlaps(self, objects: list[StoredObject]) -> None:
        active: list[StoredObject] = []
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

    def _gaps(self, objects: list[StoredObject], cursor: int, dead: set[int]) -> None:
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
            missing = [i for i in self.ids(lo, hi) if i not in dead]
            if missing:
                self.find(
                    GAP,
                    f"{len(missing)} event(s), ids {missing[0]}-{missing[-1]}, are in no object",
                    first_id=missing[0],
                    last_id=missing[-1],
                    events=len(missing),
                )

    def _check_count(self, obj: StoredObject) -> None:
        assert obj.count is not None
        expected = obj.count + obj.set_aside
        have = self.count(obj.first_id, obj.last_id, expected)
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
        self, originals: list[StoredObject], replays: list[StoredObject], dead: set[int]
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

    def _info(self, st: _State, replays: list[StoredObject], dead: set[int]) -> None:
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


def verify_integration(rt: Runtime, integ: Integration, *, deep: bool = False) -> Report:
    """Verify one integration's objects against the store and the delivery state."""
    bucket = bucket_of(integ)
    if bucket is None:
        report = Report(integ.name, integ.config.account, integ.sink.describe(), deep)
        report.skipped = f"cannot verify a {integ.config.sink_name} sink"
        return report
    verifier = Verifier(rt, integ, bucket, deep)
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
