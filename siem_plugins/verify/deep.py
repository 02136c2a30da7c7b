"""``verify --deep``: every object read and compared with the store's events formatted
again (docs/delivery.md#proving-it-verify)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from siem_plugins.events import Event

from .content import Reader, Unreadable, closing, decoded
from .context import Context, StoredObject, short
from .report import CONTENT, DUPLICATE, GAP


class DeepChecks(Context):
    """The content checks of ``--deep``."""

    def check_content(
        self,
        objects: list[StoredObject],
        representatives: list[StoredObject],
        replays: list[StoredObject],
        dead: set[int],
    ) -> None:
        """Read every object and compare it with the store's events formatted again.

        An object nothing was left out of is compared as a whole (its bytes against the
        formatter's output for its range); one with events left out, line by line, which
        also says which events it left out. Those must each be a dead letter still or in
        exactly one replay object, whose lines must be exactly such events."""
        reps = {id(o) for o in representatives}
        left_out: dict[int, StoredObject] = {}
        for obj in objects:
            if obj.replay:
                continue
            skipped = self._deep_original(obj, dead)
            if skipped is not None and id(obj) in reps:
                left_out.update((i, obj) for i in skipped)
        shipped: dict[int, list[StoredObject]] = {}
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

    def _deep_original(self, obj: StoredObject, dead: set[int]) -> set[int] | None:
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
        except Unreadable as exc:
            self.find(CONTENT, f"{obj.location}: {exc}", [obj.location])
            return None

    def _content(self, obj: StoredObject) -> Reader:
        return Reader(decoded(self.bucket.read(obj.key), obj.encoding))

    def _compare_whole(self, obj: StoredObject) -> bool:
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
        with closing(batches):
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

    def _nth(self, obj: StoredObject, n: int) -> int | None:
        """The id of the ``n``-th (from 0) event of the object's range."""
        for i, event in enumerate(self.events(obj.first_id, obj.last_id)):
            if i == n:
                return event.id
        return None

    def _match(self, reader: Reader, events: Iterable[Event]) -> tuple[list[int], list[int]]:
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

    def _compare_lines(self, obj: StoredObject) -> set[int]:
        reader = self._content(obj)
        held, skipped = self._match(reader, self.events(obj.first_id, obj.last_id))
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
                f"(ids {short(skipped)}); its metadata says {obj.count} and "
                f"{obj.set_aside}",
                [obj.location],
            )
        return set(skipped)

    def _deep_replay(self, r: StoredObject, left_out: set[int]) -> list[int]:
        """A replay object's events: each must be one the objects of its range left out."""
        wanted = {i for i in left_out if r.first_id <= i <= r.last_id}
        try:
            reader = self._content(r)
            events = (e for e in self.events(r.first_id, r.last_id) if e.id in wanted)
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
        except Unreadable as exc:
            self.find(CONTENT, f"{r.location}: {exc}", [r.location])
            return []
        return held
