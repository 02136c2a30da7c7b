"""The ``siem-plugins`` command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import site
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from siem_plugins import __version__
from siem_plugins.config import Config, config_from_dict, default_config_path, load_config
from siem_plugins.endpoint import ListenError
from siem_plugins.host import PluginHost, create_host
from siem_plugins.logs import (
    LOG_FORMATS,
    REDACTOR,
    active_log_format,
    escape,
    set_log_format,
    setup_logging,
)
from siem_plugins.options import ConfigError

log = logging.getLogger("siem_plugins.cli")

EPILOG = """\
documentation: {docs}
  (configuration.md is the reference of siem.toml; plugins.md, deployment.md, ...).
configuration: siem.toml in the current folder, or -c FILE, or $SIEM_CONFIG.
  Secrets come from the environment: password = "${{SMTP_PASSWORD}}".
plugins: built-ins, installed packages (entry point group siem_plugins), then *.py files in
  the drop-in folder: --plugins-dir, else plugins_dir of the config, else hooks/ beside the
  config file (none without a config file). Files and folders writable by group or others
  are refused. SIEM_DISABLED_PLUGINS=a,b skips plugins before import; SIEM_TRACE_PLUGINS=1
  logs every hook call.
exit status: 0 ok; 1 a sync, check, ingest, prune, replay or dead-letter replay failed (or another
  process was syncing or pruning), a plugin failed to load, verify found a discrepancy, or
  status found an integration that needs attention; 2 bad usage or configuration.
"""

#: Where the user guide is installed (``[options.data_files]`` of setup.cfg), under the
#: installation prefix.
DOCS_SUBDIR = Path("share", "doc", "siem-plugins")


def docs_folder() -> Path | None:
    """The user guide's folder: installed with the package (``sys.prefix``, or the user
    base of a ``pip install --user``), else the checkout's ``docs/`` (editable install)."""
    candidates = [
        Path(sys.prefix) / DOCS_SUBDIR,
        Path(site.getuserbase()) / DOCS_SUBDIR,
        Path(__file__).resolve().parent.parent / "docs",
    ]
    return next((c for c in candidates if _is_file(c / "configuration.md")), None)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a folder this user may not look into: a service's home, say
        return False


def _docs(page: str = "") -> str:
    """Where the user guide (or one ``page`` of it) is, for messages."""
    folder = docs_folder()
    if folder is None:
        return f"docs/{page} of the siem-plugins source"
    return str(folder / page) if page else f"{folder}{os.sep}"


class UsageError(Exception):
    pass


def _tell(message: str, level: int = logging.ERROR) -> None:
    """A line for stderr: printed as it is in text mode; in JSON mode a log record, so
    that every line on stderr is a JSON object."""
    if active_log_format() == "json":
        log.log(level, "%s", message)
    else:
        print(message, file=sys.stderr)


# --------------------------------------------------------------------------- helpers


def _config(args: argparse.Namespace, *, required: bool = True) -> Config | None:
    path = Path(args.config) if args.config else default_config_path()
    if not path.exists() and not args.config and not required:
        return None
    if not path.exists() and not args.config:
        raise ConfigError(
            f"no config file ({path}); write one ({_docs('configuration.md')}) or pass "
            "-c FILE; `siem-plugins demo` shows a sync without one"
        )
    cfg = load_config(path)
    REDACTOR.add(cfg.secrets)
    if args.log_format is None:  # neither --log-format nor SIEM_LOG_FORMAT
        set_log_format(cfg.log_format)
    return cfg


def _plugins_dir(args: argparse.Namespace, cfg: Config | None) -> Path | None:
    """The drop-in folder: ``--plugins-dir``, else the config's (``plugins_dir``, else
    ``hooks/`` beside the config file). Never the working directory by itself: plugins
    are code, and a shipper started from another folder must not run what is there."""
    if args.plugins_dir:
        given = Path(args.plugins_dir)
        if not given.is_dir():
            log.warning("--plugins-dir %s is not a folder: no drop-in plugins loaded", given)
        return given
    folder = cfg.drop_in_folder() if cfg is not None else None
    if folder is None:
        log.debug("no config file and no --plugins-dir: no drop-in plugins loaded")
    return folder


def _host(args: argparse.Namespace, cfg: Config | None) -> PluginHost:
    return create_host(_plugins_dir(args, cfg))


@contextlib.contextmanager
def _runtime(args: argparse.Namespace, cfg: Config) -> Iterator[Any]:
    from siem_plugins.runtime import Runtime

    rt = Runtime(cfg, _host(args, cfg))
    try:
        yield rt
    finally:
        rt.close()


# --------------------------------------------------------------------------- commands


def cmd_plugins(args: argparse.Namespace) -> int:
    cfg = _config(args, required=False)
    host = _host(args, cfg)
    rows: list[dict[str, Any]] = []
    for info in host.plugins.values():
        rows.append(
            {
                "name": info.name,
                "origin": info.origin,
                "version": info.version,
                "provides": [
                    {"kind": p.kind, "name": p.name, "description": p.description}
                    for p in info.provides
                ],
                "hooks": info.hooks,
            }
        )
    failures = [{"name": f.name, "origin": f.origin, "error": f.error} for f in host.failures]
    disabled = [{"name": d.name, "origin": d.origin} for d in host.skipped]
    # A plugin that failed to load is an error a deployment check must see; one the
    # operator disabled on purpose is not.
    status = 1 if failures else 0
    if args.json:
        print(json.dumps({"plugins": rows, "failures": failures, "disabled": disabled}, indent=2))
        return status
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Names, origins and errors come from third-party code: never let them be read as markup.
    table = Table(title="siem-plugins plugins")
    for col in ("plugin", "provides (kind: name: description)", "origin", "hooks"):
        table.add_column(col)
    for row in rows:
        provides = (
            "\n".join(
                f"{p['kind']}: {p['name']}" + (f": {p['description']}" if p["description"] else "")
                for p in row["provides"]
            )
            or "-"
        )
        cells = (row["name"], provides, row["origin"], "\n".join(row["hooks"]))
        table.add_row(*(escape(str(c)) for c in cells))
    console = Console()
    console.print(table)
    for d in host.skipped:
        console.print(
            f"[yellow]disabled[/yellow]: plugin {escape(repr(d.name))} ({escape(d.origin)}) "
            "by SIEM_DISABLED_PLUGINS",
            highlight=False,
        )
    for f in host.failures:
        console.print(f"[red]not loaded[/red]: {escape(str(f))}", highlight=False)
    return status


def cmd_ingest(args: argparse.Namespace) -> int:
    """Store each file in one transaction: whole, or (on a store error) not at all.

    A store error (disk full, connection lost, database locked) ends the run: the next
    file would meet it too, and re-running the command is safe, because a file already
    stored for the account is recognised by its SHA-256 and skipped.
    """
    from siem_plugins.ingest import InputError, NdjsonInput, Rejection
    from siem_plugins.keys import InvalidAccount, check_account
    from siem_plugins.storage import DEFAULT_URL, open_store

    cfg = _config(args, required=False)
    url = args.store or (cfg.store_options.raw("url", DEFAULT_URL) if cfg else DEFAULT_URL)
    try:
        check_account(args.account)
    except InvalidAccount as exc:
        raise UsageError(str(exc)) from None
    rejected = 0
    rejects_file: BinaryIO | None = open(args.rejects, "wb") if args.rejects else None  # noqa: SIM115

    def on_reject(r: Rejection) -> None:
        nonlocal rejected
        rejected += 1
        if rejected <= args.max_errors:
            print(f"rejected: {r}", file=sys.stderr)
        elif rejected == args.max_errors + 1:
            print("(more rejections not shown; see --rejects)", file=sys.stderr)
        if rejects_file is not None:
            rejects_file.write(r.raw if r.raw.endswith(b"\n") else r.raw + b"\n")

    try:
        store = open_store(url)
    except Exception as exc:
        raise UsageError(
            f"cannot open the store {_safe_url(url)}: {_store_reason(exc, url)}"
        ) from None
    total = stored_files = already_files = failed_files = 0
    not_read: list[str] = []
    try:
        for index, name in enumerate(args.files):
            if name == "-":
                stream: BinaryIO = sys.stdin.buffer
                label = "<stdin>"
            else:
                try:
                    stream = open(name, "rb")  # noqa: SIM115
                except OSError as exc:
                    print(f"{name}: nothing stored: {exc.strerror or exc}", file=sys.stderr)
                    failed_files += 1
                    continue
                label = name
            before = rejected
            source = NdjsonInput(stream, label, on_reject)
            try:
                result = store.append(args.account, source, origin=source, force=args.force)
            except InputError as exc:
                print(f"{label}: nothing stored: {exc}", file=sys.stderr)
                failed_files += 1
                continue
            except KeyboardInterrupt:
                print(f"{label}: nothing stored: interrupted", file=sys.stderr)
                raise
            except Exception as exc:  # the store failed: it rolled the file back
                print(f"{label}: nothing stored: {_store_reason(exc, url)}", file=sys.stderr)
                failed_files += 1
                not_read = args.files[index + 1 :]
                break
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
            if result.already is not None:
                was = result.already
                already_files += 1
                print(
                    f"{label}: already stored as ids {was.first_id}-{was.last_id} on "
                    f"{was.stored_at}; nothing stored (use --force to store it again)"
                )
                continue
            stored_files += 1
            total += result.accepted
            ids = f" (ids {result.first_id}-{result.last_id})" if result.accepted else ""
            print(
                f"{label}: stored {result.accepted} events for account {args.account!r}{ids}; "
                f"{source.lines} lines, {rejected - before} rejected"
            )
    finally:
        store.close()
        if rejects_file is not None:
            rejects_file.close()
    if not_read:
        print(
            f"not read, after the store failed: {', '.join(not_read)} (re-run the command: "
            "files already stored are recognised and skipped)",
            file=sys.stderr,
        )
    failed = bool(rejected or failed_files)
    print(
        f"{rejected} line(s) rejected, {total} stored; files: {stored_files} stored, "
        f"{already_files} already stored, {failed_files + len(not_read)} not stored",
        file=sys.stderr if failed else sys.stdout,
    )
    return 1 if failed else 0


def _store_reason(exc: BaseException, url: str) -> str:
    """A store error on one line, without the URL's password."""
    from siem_plugins.config import redact_url

    text = " ".join(str(exc).split()) or type(exc).__name__
    password = _url_password(url)
    if password:
        text = text.replace(password, "***")
    return redact_url(text)


def _url_password(url: str) -> str | None:
    from siem_plugins.storage import is_postgres

    if not is_postgres(url):
        return None
    try:
        import psycopg

        value = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except Exception:  # no driver, or a URL it cannot read: nothing to hide from it
        return None
    return str(value) if value else None


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List or replay the events formatters could not format (docs/delivery.md)."""
    cfg = _config(args)
    assert cfg is not None
    if args.action == "list":
        from siem_plugins.runtime import open_state_of

        state = open_state_of(cfg)
        try:
            names = args.integration or [None]
            letters = [d for n in names for d in state.dead_letters(n)]
        finally:
            state.close()
        if args.json:
            print(json.dumps([dataclasses.asdict(d) for d in letters], indent=2))
            return 0
        if not letters:
            print("no dead letters")
            return 0
        for d in letters:
            where = f"account {d.account}, set aside {d.created}"
            print(f"{d.integration}: event {d.event_id} ({where}): {d.error}")
        print(f"{len(letters)} dead letter(s)")
        return 0
    from siem_plugins.pipeline import Pipeline

    failed = 0
    with _runtime(args, cfg) as rt:
        pipeline = Pipeline(rt)
        for integ in rt.enabled(args.integration):
            outcome = pipeline.replay_set_aside(integ)
            if outcome.skipped:
                print(f"{integ.name}: SKIPPED: {outcome.skipped}")
                failed += 1
                continue
            if outcome.receipt is not None:
                print(
                    f"{integ.name}: shipped {len(outcome.shipped)} set-aside events to "
                    f"{outcome.receipt.location}"
                )
            for event_id, why in sorted(outcome.still_failing.items()):
                print(f"{integ.name}: event {event_id} still cannot be formatted: {why}")
                failed += 1
            if outcome.receipt is None and not outcome.still_failing:
                print(f"{integ.name}: nothing to replay")
    return 1 if failed else 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-ship a range of an integration's events without moving its cursors."""
    from siem_plugins.replay import ReplayError

    try:
        return _replay(args)
    except ReplayError as exc:
        _tell(f"error: {exc}")
        return 2


def _replay(args: argparse.Namespace) -> int:
    from siem_plugins.events import point_in_time
    from siem_plugins.pipeline import Pipeline
    from siem_plugins.replay import (
        ReplayError,
        ReplayRunner,
        describe_target,
        new_job,
        parse_settings,
    )
    from siem_plugins.storage import SINK, StateError

    cfg = _config(args)
    assert cfg is not None
    with _runtime(args, cfg) as rt:
        if args.action == "list":
            names = args.integration or [None]
            jobs = [j for n in names for j in rt.state.replay_jobs(n)]
            if args.json:
                print(json.dumps([dataclasses.asdict(j) for j in jobs], indent=2))
                return 0
            for j in jobs:
                done = f"finished {j.finished}" if j.finished else "UNFINISHED"
                where = describe_target(json.loads(j.target))
                print(
                    f"{j.integration}: job {j.job}: ids {j.first_id}-{j.last_id} to {where}; "
                    f"{j.objects} objects, {j.events} events; {done}"
                )
            if not jobs:
                print("no replay jobs")
            return 0
        pipeline = Pipeline(rt)
        if args.action == "start":
            if not args.integration or len(args.integration) != 1:
                raise ReplayError("replay start: name one integration with -i NAME")
            rt.config.integration(args.integration[0])  # an unknown name lists the known
            integ = next(i for i in rt.integrations if i.name == args.integration[0])
            since = until = None
            try:
                since = point_in_time(args.since) if args.since else None
                until = point_in_time(args.until) if args.until else None
            except ValueError as exc:
                raise ReplayError(f"--since/--until: {exc}") from None
            target: dict[str, Any] = {}
            if args.to:
                target["to"] = args.to
            if args.set:
                target["options"] = parse_settings(args.set)
            job = new_job(
                integ,
                source=rt.source,
                sink_cursor=rt.state.cursor(integ.name, SINK),
                from_id=args.from_id,
                to_id=args.to_id,
                since=since,
                until=until,
                target=target,
                name=args.job,
            )
            # Build the target now: a bad --set or --to fails before the job is recorded.
            _, built = rt.retarget(integ, to=args.to, options=target.get("options"))
            where = (built.describe() if built else None) or describe_target(target)
            if built is not None:
                built.close()
            if args.dry_run:
                print(
                    f"{integ.name}: would replay ids {job.first_id}-{job.last_id} of account "
                    f"{job.account} to {where} as job {job.job}"
                )
                return 0
            try:
                rt.state.create_replay(job)
            except StateError as exc:
                raise ReplayError(f"{exc}; choose another --job name") from None
            jobs = [j for j in rt.state.replay_jobs(integ.name) if j.job == job.job]
        else:  # resume
            names = args.integration or [None]
            jobs = [
                j
                for n in names
                for j in rt.state.replay_jobs(n)
                if j.finished is None and (args.job is None or j.job == args.job)
            ]
            if not jobs:
                print("no unfinished replay jobs")
                return 0
        failed = 0
        runner = ReplayRunner(pipeline)
        for job in jobs:
            outcome = runner.run(job)
            for receipt in outcome.objects:
                print(
                    f"{job.integration}: job {job.job}: wrote {receipt.location} "
                    f"({receipt.meta.count} events)"
                )
            if outcome.finished:
                total = job.events + outcome.events
                print(
                    f"{job.integration}: job {job.job}: done: ids {job.first_id}-{job.last_id}, "
                    f"{job.objects + len(outcome.objects)} objects, {total} events"
                )
                continue
            failed += 1
            why = outcome.skipped or outcome.error or "stopped by signal"
            print(
                f"{job.integration}: job {job.job}: NOT FINISHED: {why}; "
                f"`siem-plugins replay resume --job {job.job}` continues it exactly where it "
                "stopped"
            )
    return 1 if failed else 0


def _actor(args: argparse.Namespace) -> Any:
    """Who changes stored integrations from the command line: the operator (the OS user
    on this host, unless --admin-name/--admin-email say otherwise)."""
    import getpass
    import socket

    from siem_plugins.control.service import Actor

    user = getpass.getuser()
    name = args.admin_name or user
    email = args.admin_email or f"{user}@{socket.gethostname()}"
    return Actor(name, email, via="siem-plugins integrations")


def _shown(document: Any, key: str = "") -> Any:
    """A stored document for people: secrets as ``set``, access key ids shortened."""
    from siem_plugins.control.secrets import last4
    from siem_plugins.options import is_secret_key

    if isinstance(document, dict):
        return {k: _shown(v, k) for k, v in document.items()}
    if isinstance(document, list):
        return [_shown(v, key) for v in document]
    if key and is_secret_key(key):
        return "set" if document else "not set"
    if key == "access_key_id" and isinstance(document, str):
        return last4(document)
    return document


def _read_document(path: str) -> dict[str, Any]:
    """One integration table from a JSON or TOML file (``-``: JSON on stdin)."""
    import tomllib

    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        data = json.loads(text) if path == "-" or path.endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'TOML'}: {exc}"
        ) from None
    tables = data.get("integration") if isinstance(data, dict) else None
    if isinstance(tables, list) and len(tables) == 1 and len(data) == 1:
        data = tables[0]
    if not isinstance(data, dict) or isinstance(data.get("integration"), list):
        raise UsageError(f"{path}: expected one integration table (or one [[integration]])")
    return data


def cmd_integrations(args: argparse.Namespace) -> int:
    """The integrations kept as data (the settings API's), for the operator."""
    from siem_plugins.control.service import SaveRefused, save
    from siem_plugins.control.store import VersionConflict

    cfg = _config(args)
    assert cfg is not None
    with _runtime(args, cfg) as rt:
        control = rt.control
        assert control is not None
        if args.action == "list":
            rows = control.list(args.account)
            if args.json:
                print(json.dumps([_shown(dataclasses.asdict(r)) for r in rows], indent=2))
                return 0
            for r in rows:
                state = "enabled" if r.enabled else "disabled"
                print(
                    f"{r.name}: account {r.account}, version {r.version}, {state}, "
                    f"updated {r.updated} by {r.updated_by}"
                )
            if not rows:
                print("no stored integrations")
            return 0
        if not args.target:
            raise UsageError(f"integrations {args.action}: name the integration (or the file)")
        if args.action == "show":
            found = control.get(args.target)
            if found is None:
                raise UsageError(f"no stored integration named {args.target!r}")
            print(json.dumps(_shown(dataclasses.asdict(found)), indent=2))
            return 0
        if args.action == "delete":
            if not control.delete(args.target):
                raise UsageError(f"no stored integration named {args.target!r}")
            print(f"{args.target}: deleted (its cursors stay: a new one of that name continues)")
            return 0
        try:
            if args.action == "put":
                document = _read_document(args.target)
            else:  # enable, disable
                found = control.get(args.target)
                if found is None:
                    raise UsageError(f"no stored integration named {args.target!r}")
                document = {**found.document, "enabled": args.action == "enable"}
                args.expect_version = found.version
            saved = save(
                rt,
                document,
                actor=_actor(args),
                expected_version=args.expect_version,
                probe_first=not args.no_probe,
            )
        except SaveRefused as exc:
            for error in exc.errors:
                print(f"refused: {error.field or 'integration'}: {error.message}", file=sys.stderr)
            return 1
        except VersionConflict as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        state = "enabled" if saved.enabled else "disabled"
        print(f"{saved.name}: saved as version {saved.version} ({state}, account {saved.account})")
    return 0


def cmd_secrets(args: argparse.Namespace) -> int:
    """Keys of the secrets kept in the store: make one, re-encrypt with the newest."""
    from siem_plugins.control.secrets import SecretBox, SecretKeyError, generate_key

    if args.action == "new-key":
        print(generate_key())
        return 0
    cfg = _config(args)
    assert cfg is not None
    try:
        box = SecretBox.from_environment()
    except SecretKeyError as exc:
        raise UsageError(str(exc)) from None
    if box is None:
        raise UsageError(
            "no keys: set SIEM_SECRET_KEYS (or SIEM_SECRET_KEYS_FILE), the new key first"
        )
    from siem_plugins.control.store import open_control, store_url

    control = open_control(store_url(cfg))
    try:
        rotated, current = control.reseal(box)
    except SecretKeyError as exc:
        raise UsageError(f"{exc}; nothing after the first such secret was changed") from None
    finally:
        control.close()
    print(f"{rotated} secrets re-encrypted with the newest key, {current} were already")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    """API tokens of the settings server: create (printed once), list, revoke."""
    from siem_plugins.control import tokens
    from siem_plugins.control.store import open_control, store_url
    from siem_plugins.keys import InvalidAccount, check_account

    cfg = _config(args)
    assert cfg is not None
    control = open_control(store_url(cfg))
    try:
        if args.action == "create":
            if bool(args.account) == bool(args.operator):
                raise UsageError("tokens create: give --account ACCOUNT, or --operator")
            if args.account:
                try:
                    check_account(args.account)
                except InvalidAccount as exc:
                    raise UsageError(f"--account: {exc}") from None
            if not args.admin_name or not args.admin_email:
                raise UsageError(
                    "tokens create: --admin-name and --admin-email say whose token it is "
                    "(they sign the account's config events)"
                )
            for value in (args.admin_name, args.admin_email, args.label or ""):
                if any(ord(c) < 32 or ord(c) == 127 for c in value) or len(value) > 200:
                    raise UsageError("names, addresses and labels are one line of text")
            made = tokens.new_token()
            control.add_token(
                made.id,
                made.digest,
                account=args.account,
                label=args.label or "",
                admin_name=args.admin_name,
                admin_email=args.admin_email,
            )
            scope = f"account {args.account}" if args.account else "the operator (every account)"
            print(made.text)
            _tell(
                f"token {made.id} for {scope}, {args.admin_name} <{args.admin_email}>; "
                "it is shown this once: keep it now",
                logging.INFO,
            )
            return 0
        if args.action == "revoke":
            if not args.id:
                raise UsageError("tokens revoke: give the token's id (`tokens list`)")
            if not control.revoke_token(args.id):
                raise UsageError(f"no live token with id {args.id!r}")
            print(f"token {args.id}: revoked")
            return 0
        rows = control.tokens(args.account)
        if args.json:
            print(
                json.dumps(
                    [
                        {k: v for k, v in dataclasses.asdict(r).items() if k != "digest"}
                        for r in rows
                    ],
                    indent=2,
                )
            )
            return 0
        for r in rows:
            scope = f"account {r.account}" if r.account else "operator"
            state = f"revoked {r.revoked}" if r.revoked else f"last used {r.last_used or 'never'}"
            print(f"{r.id}: {scope}, {r.admin_name} <{r.admin_email}> {r.label}; {state}")
        if not rows:
            print("no tokens")
        return 0
    finally:
        control.close()


def cmd_serve(args: argparse.Namespace) -> int:
    """The settings server: the API and the page."""
    import socket

    try:
        from siem_plugins.web.app import create_app, serve
        from siem_plugins.web.auth import session_secret
    except ImportError as exc:
        raise UsageError(
            f"the settings server needs its extra: pip install 'siem-plugins[server]' ({exc})"
        ) from None
    cfg = _config(args)
    assert cfg is not None
    with _runtime(args, cfg) as rt:
        secret, source = session_secret()
        app = create_app(rt, session_secret=secret, secure_cookies=args.secure_cookies)
        family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((args.address, args.port))
            # Listening before saying so: a client that connects at once is queued until
            # the server accepts, never refused.
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise UsageError(f"cannot listen on {args.address}:{args.port}: {exc}") from None
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("session cookies signed with a key from %s", source)
        _tell(f"serving on http://{shown}:{port}", logging.INFO)
        serve(app, sock=sock)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Compare each integration's objects with the store (docs/delivery.md)."""
    from siem_plugins.verify import render, verify_integration

    cfg = _config(args)
    assert cfg is not None
    with _runtime(args, cfg) as rt:
        reports = [verify_integration(rt, i, deep=args.deep) for i in rt.enabled(args.integration)]
    # An integration asked for by name must be proved; by default, one whose sink cannot
    # be read is listed as not verified and does not fail the run.
    failed = [r for r in reports if not r.ok or (r.skipped and args.integration)]
    if args.json:
        print(
            json.dumps({"ok": not failed, "integrations": [r.as_dict() for r in reports]}, indent=2)
        )
    else:
        for report in reports:
            print("\n".join(render(report)))
        if not reports:
            print("no enabled integrations", file=sys.stderr)
    return 1 if failed else 0


def _progress_columns() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        transient=True,
    )


def cmd_sync(args: argparse.Namespace) -> int:
    from siem_plugins.pipeline import Pipeline
    from siem_plugins.signals import stop_on_signals

    cfg = _config(args)
    assert cfg is not None
    stop = threading.Event()
    restore = stop_on_signals(stop, exit_status=130)
    failed = 0
    try:
        with _runtime(args, cfg) as rt:
            integrations = rt.enabled(args.integration)
            if not integrations:
                _tell("no enabled integrations", logging.WARNING)
            show = sys.stderr.isatty() and not args.no_progress
            progress = _progress_columns() if show else None
            tasks: dict[str, Any] = {}

            def advance(name: str, n: int) -> None:
                if progress is not None:
                    progress.advance(tasks[name], n)

            pipeline = Pipeline(rt, stop=stop, progress=advance)
            with progress if progress is not None else contextlib.nullcontext():
                for integ in integrations:
                    try:
                        if progress is not None:
                            backlog = rt.source_backlog(integ)
                            tasks[integ.name] = progress.add_task(integ.name, total=backlog)
                        result = pipeline.sync(integ, catch_up=not args.one_object)
                    except Exception as exc:  # a bug: one line, and the other integrations
                        print(f"{integ.name}: FAILED: {type(exc).__name__}: {exc}")
                        log.debug("sync of %s failed", integ.name, exc_info=True)
                        failed += 1
                        continue
                    for destination, why in result.skipped.items():
                        print(f"{integ.name}: SKIPPED {destination}: {why}; nothing was written")
                    if len(result.skipped) == 2:
                        failed += 1
                        continue
                    status = "ok" if result.ok else "FAILED"
                    print(
                        f"{integ.name}: {status}: {len(result.objects)} objects, "
                        f"{result.events} events, {len(result.digests)} digests"
                        + (
                            f", {len(result.set_aside)} events set aside"
                            if result.set_aside
                            else ""
                        )
                    )
                    for receipt in result.objects:
                        print(
                            f"  {receipt.location}  ({receipt.meta.count} events, "
                            f"{receipt.size} bytes)"
                        )
                    for event_id, why in sorted(result.set_aside.items()):
                        print(f"  set aside: event {event_id}: {why}")
                    if result.set_aside:
                        print(
                            "  (listed by `siem-plugins dead-letters list`; shipped by "
                            "`siem-plugins dead-letters replay` once the formatter copes)"
                        )
                    if active_log_format() == "text":  # in JSON, the ERROR records say it
                        for err in result.errors.values():
                            print(f"  error: {escape(err)}", file=sys.stderr)
                    failed += not result.ok or bool(result.skipped)
                    if stop.is_set():
                        _tell("stopped by signal; the rest resumes next time", logging.WARNING)
                        break
    finally:
        restore()
    return 1 if failed else 0


def _listen(args: argparse.Namespace, cfg: Config, role: str) -> tuple[str, int] | None:
    """Where ``role`` (``run`` or ``worker``) serves its metrics: the command line, else
    ``[metrics]``; None: nowhere."""
    from siem_plugins.config import check_listen_address

    port = args.metrics_port
    if port is None:
        port = cfg.metrics.worker_port if role == "worker" else cfg.metrics.port
    if port is None:
        return None
    address = args.metrics_address or cfg.metrics.address
    check_listen_address(address, lambda why: UsageError(f"--metrics-address: {why}"))
    return address, port


def _all_integrations(cfg: Config) -> Callable[[], list[tuple[str, bool]]]:
    """(name, enabled) of the config's integrations and those kept as data, read anew at
    each call (a scrape): the beat's gauges follow the settings API's changes."""

    def read() -> list[tuple[str, bool]]:
        from siem_plugins.control.store import stored_integrations

        out = [(i.name, i.enabled) for i in cfg.integrations]
        taken = {n for n, _ in out}
        return out + [(s.name, s.enabled) for s in stored_integrations(cfg) if s.name not in taken]

    return read


def _metrics_endpoint(
    args: argparse.Namespace,
    cfg: Config,
    role: str,
    *,
    readiness: Any,
    state: Any = None,
    interval: float | None = None,
    integrations: Callable[[], list[tuple[str, bool]]] | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` while the block runs, if asked
    to (``--metrics-port`` or ``[metrics]``). ``state``: the runtime's state store, else
    the endpoint opens its own. The gauges are served by ``run`` only."""
    listen = _listen(args, cfg, role)
    if listen is None:
        return contextlib.nullcontext()
    from siem_plugins.endpoint import Watched, endpoint
    from siem_plugins.runtime import open_state_of

    return endpoint(
        address=listen[0],
        port=listen[1],
        role=role,
        open_state=(lambda: state) if state is not None else (lambda: open_state_of(cfg)),
        close_state=state is None,
        readiness=readiness,
        watched=lambda: [Watched(n, e) for n, e in (integrations or _all_integrations(cfg))()],
        interval=interval if interval is not None else cfg.interval,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from siem_plugins.config import parse_duration
    from siem_plugins.options import Options
    from siem_plugins.scheduler import Scheduler
    from siem_plugins.signals import stop_on_signals

    cfg = _config(args)
    assert cfg is not None
    interval = None
    if args.interval is not None:
        interval = parse_duration(args.interval, Options({}, path=""), "--interval")
    if args.executor == "celery":
        from siem_plugins.endpoint import Readiness
        from siem_plugins.fleet import run_beat
        from siem_plugins.retention import RetentionJob

        stop = threading.Event()
        restore = stop_on_signals(stop, exit_status=130)
        readiness = Readiness()
        retention = None
        try:
            with _metrics_endpoint(args, cfg, "beat", readiness=readiness, interval=interval):
                retention = RetentionJob.start_for(cfg, stop)
                return run_beat(
                    Path(cfg.file),
                    interval=interval,
                    cycles=args.cycles,
                    stop=stop,
                    readiness=readiness,
                )
        finally:
            stop.set()
            if retention is not None:
                retention.join()
            restore()
    with _runtime(args, cfg) as rt:
        sched = Scheduler(rt, interval=interval)
        sched.install_signal_handlers()
        with _metrics_endpoint(
            args,
            cfg,
            "run",
            readiness=sched.readiness,
            state=rt.state,
            interval=sched.interval,
            integrations=lambda: [(i.name, i.config.enabled) for i in rt.integrations],
        ):
            log.info(
                "running %d integrations every %.0fs (Ctrl-C or SIGTERM stops cleanly)",
                len(rt.enabled()),
                sched.interval,
            )
            sched.run(max_cycles=args.cycles)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete the events every integration of their account has shipped
    (docs/deployment.md#retention)."""
    from siem_plugins.config import parse_duration
    from siem_plugins.options import Options
    from siem_plugins.retention import DEFAULT_PAUSE, open_stores, prune, shippers_in
    from siem_plugins.signals import stop_on_signals
    from siem_plugins.storage import DEFAULT_URL

    cfg = _config(args)
    assert cfg is not None
    if cfg.store_name != "store":
        raise UsageError(
            f"prune deletes from the built-in store; [store] type = {cfg.store_name!r} keeps "
            "its events elsewhere"
        )
    older_than = cfg.retention.older_than
    if args.older_than is not None:
        older_than = parse_duration(
            args.older_than, Options({}, path=""), "--older-than", maximum=None
        )
    url = str(cfg.store_options.raw("url", DEFAULT_URL))
    try:
        store, state = open_stores(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # unreachable, schema too old, driver missing
        raise UsageError(
            f"cannot open the store {_safe_url(url)}: {_store_reason(exc, url)}"
        ) from None
    stop = threading.Event()
    restore = stop_on_signals(stop, exit_status=130)
    try:
        report = prune(
            store,
            state,
            shippers_in(cfg),
            older_than=older_than,
            orphans=args.orphans or cfg.retention.orphans,
            dry_run=args.dry_run,
            batch=args.batch or cfg.retention.batch,
            pause=DEFAULT_PAUSE if args.pause is None else args.pause,
            stop=stop,
        )
    finally:
        restore()
        state.close()
        store.close()
    for outcome in report.accounts:
        if outcome.error:
            outcome.error = _store_reason(Exception(outcome.error), url)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return 1 if report.failed else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from siem_plugins.fleet import run_worker

    cfg = _config(args)
    assert cfg is not None
    level = "DEBUG" if args.verbose else "INFO"
    plugins_dir = Path(args.plugins_dir).absolute() if args.plugins_dir else None
    return run_worker(
        Path(cfg.file),
        concurrency=args.concurrency,
        pool=args.pool,
        loglevel=level,
        plugins_dir=plugins_dir,
        metrics_at=_listen(args, cfg, "worker"),
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Every integration's health: a table (or JSON); exit 1 if one needs attention."""
    from datetime import UTC, datetime

    from siem_plugins.config import parse_duration
    from siem_plugins.health import ALARMING, Thresholds, collect
    from siem_plugins.options import Options

    cfg = _config(args)
    assert cfg is not None
    max_lag = None
    if args.max_lag is not None:
        max_lag = parse_duration(args.max_lag, Options({}, path=""), "--max-lag")
    thresholds = Thresholds.for_interval(
        cfg.interval, max_lag=max_lag, max_lag_events=args.max_lag_events
    )
    now = datetime.now(UTC)
    with _runtime(args, cfg) as rt:
        if args.integration:
            for name in args.integration:
                cfg.integration(name)  # an unknown name is a usage error, listed
        report = collect(rt, thresholds=thresholds, names=args.integration, now=now)
        runs = {
            h.name: rt.state.recent_runs(h.name, limit=args.runs)
            for h in report
            if args.integration
        }
    alarm = any(h.enabled and h.state in ALARMING for h in report)
    if args.json:
        print(json.dumps(_status_json(report, runs, thresholds), indent=2))
        return 1 if alarm else 0
    _print_status(report, runs, now)
    return 1 if alarm else 0


def _status_json(report: Any, runs: dict[str, Any], thresholds: Any) -> dict[str, Any]:
    out = []
    for h in report:
        destinations = []
        for d in h.destinations:
            r = d.record
            destinations.append(
                {
                    "destination": d.destination,
                    "where": d.where,
                    "state": d.state,
                    "cursor": d.cursor,
                    "behind_events": None if d.lag is None else d.lag.events,
                    "oldest_unshipped": None if d.lag is None else d.lag.oldest,
                    "lag_seconds": None if d.lag_seconds is None else round(d.lag_seconds, 3),
                    "last_attempt": r and r.last_attempt,
                    "last_success": r and r.last_success,
                    "last_error": r and r.last_error,
                    "last_error_at": r and r.last_error_at,
                    "consecutive_failures": r.failures if r else 0,
                    "pending": None
                    if d.pending is None
                    else {
                        "first_id": d.pending.first_id,
                        "last_id": d.pending.last_id,
                        "count": d.pending.count,
                        "key": d.pending.key,
                    },
                }
            )
        item: dict[str, Any] = {
            "integration": h.name,
            "account": h.account,
            "format": h.format,
            "enabled": h.enabled,
            "state": h.state,
            "destinations": destinations,
        }
        if h.name in runs:
            item["recent_runs"] = [dataclasses.asdict(run) for run in runs[h.name]]
        out.append(item)
    return {
        "thresholds": {
            "max_lag_seconds": thresholds.max_lag,
            "max_lag_events": thresholds.max_lag_events,
            "stale_after_seconds": thresholds.stale_after,
        },
        "integrations": out,
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _print_status(report: Any, runs: dict[str, Any], now: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colours = {"ok": "green", "disabled": "dim", "never run": "yellow", "behind": "yellow"}
    table = Table(title="siem-plugins status")
    for col in (
        "integration",
        "account",
        "format",
        "destination",
        "state",
        "behind",
        "lag",
        "last success",
        "last error",
    ):
        table.add_column(col, overflow="fold")
    for h in report:
        for d in h.destinations:
            r = d.record
            colour = colours.get(d.state, "red")
            error = r.last_error if r and r.last_error else ""
            if len(error) > 120:
                error = error[:117] + "..."
            table.add_row(
                escape(h.name),
                escape(h.account),
                escape(h.format),
                escape(f"{d.destination} {d.where}"),
                f"[{colour}]{d.state}[/{colour}]",
                "?" if d.lag is None else f"{d.lag.events:,}",
                _age(d.lag_seconds),
                escape(r.last_success or "never") if r else "never",
                escape(error),
            )
    console = Console()
    console.print(table)
    for name, recent in runs.items():
        detail = Table(title=f"{name}: recent passes")
        for col in ("destination", "worker", "started", "finished", "objects", "events", "error"):
            detail.add_column(col, overflow="fold")
        for run in recent:
            detail.add_row(
                *(
                    escape("" if v is None else str(v))
                    for v in (
                        run.destination,
                        run.worker,
                        run.started,
                        run.finished or "running",
                        run.objects,
                        run.events,
                        run.error,
                    )
                )
            )
        console.print(detail)
        for h in report:
            for d in h.destinations:
                if h.name == name and d.pending is not None:
                    console.print(
                        f"{escape(name)} {d.destination}: pending intent "
                        f"{d.pending.first_id}-{d.pending.last_id} ({d.pending.count} events, "
                        f"{escape(d.pending.key)})",
                        highlight=False,
                    )


def cmd_store(args: argparse.Namespace) -> int:
    from siem_plugins.storage import DEFAULT_URL, is_postgres, open_store

    cfg = _config(args, required=False)
    url = args.store or (cfg.store_options.raw("url", DEFAULT_URL) if cfg else DEFAULT_URL)
    if is_postgres(url):
        from siem_plugins.storage import SCHEMA_VERSION, connect, migrate, schema_version

        if args.action == "migrate":
            applied = migrate(url)
            print(
                f"{_safe_url(url)}: applied migrations {applied}"
                if applied
                else f"{_safe_url(url)}: up to date"
            )
        with connect(url) as conn:
            print(f"schema version {schema_version(conn)} (this release: {SCHEMA_VERSION})")
        return 0
    store = open_store(url)  # SQLite creates its schema on open
    print(f"{_safe_url(url)}: ready ({store.count()} events)")
    store.close()
    return 0


def _safe_url(url: str) -> str:
    """A store URL without its password, for messages."""
    from siem_plugins.config import redact_url

    return redact_url(url)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    assert cfg is not None
    if args.print_config:
        print(json.dumps(cfg.redacted(), indent=2, default=str))
    failed = 0
    with _runtime(args, cfg) as rt:
        # Only now is it known to be ok: building the runtime checks every plugin setting.
        print(f"config {cfg.file}: ok ({len(cfg.integrations)} integrations)")
        for integ in rt.integrations:
            state = "enabled" if integ.config.enabled else "disabled"
            print(
                f"{integ.name} ({state}, account {integ.config.account}, "
                f"{integ.config.format_name})"
            )
            if args.no_probe:
                continue
            for label, part in (("sink", integ.sink), ("notifier", integ.notifier)):
                where = integ.sink.describe() if label == "sink" else integ.notifier_label
                try:
                    part.probe()
                except Exception as exc:
                    failed += 1
                    print(f"  {label} {where}: FAILED: {exc}")
                else:
                    print(f"  {label} {where}: ok")
                    if label == "sink":
                        _check_notifications(integ.sink)
    return 1 if failed else 0


def _check_notifications(sink: object) -> None:
    """For an ``s3`` sink, whether the bucket announces new objects (SQS-based SIEM
    readers depend on it). Information only: it never fails ``check``."""
    from siem_plugins.builtin.s3 import S3Sink, SinkError

    if not isinstance(sink, S3Sink):
        return
    try:
        found = sink.notifications()
    except SinkError as exc:
        if exc.code == "AccessDenied":
            print("  notifications: unknown (s3:GetBucketNotification denied)")
        else:
            print(f"  notifications: unknown ({exc})")
        return
    print(f"  notifications: {found.describe(sink.prefix)}")


def cmd_demo(args: argparse.Namespace) -> int:
    from siem_plugins.demo import generate
    from siem_plugins.events import canonicalize
    from siem_plugins.pipeline import Pipeline
    from siem_plugins.runtime import Runtime
    from siem_plugins.storage import SQLiteStore

    root = Path(args.dir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    store_path = root / "siem.db"
    store = SQLiteStore(store_path)
    accounts = ("acme", "globex")
    for i, account in enumerate(accounts):
        store.append(account, (canonicalize(e) for e in generate(args.events, seed=i + 1)))
    store.close()
    print(f"demo: stored {args.events} events for each of {', '.join(accounts)} in {store_path}")
    raw = {
        "store": {"url": f"sqlite:///{store_path}"},
        "integration": [
            {
                "name": f"{account}-{fmt}",
                "account": account,
                "format": fmt,
                "sink": {"type": "local", "path": str(root / "bucket")},
                "notify": {
                    "type": "outbox",
                    "path": str(root / "outbox"),
                    "from": "siem@example.com",
                    "to": [f"admins@{account}.example"],
                    "events": ["exempt_all", "threat_detected", "config"],
                },
            }
            for account in accounts
            for fmt in ("json", "syslog")
        ],
    }
    cfg = config_from_dict(raw, file="<demo>")
    with contextlib.closing(Runtime(cfg, _host(args, cfg))) as rt:
        pipeline = Pipeline(rt)
        failed = 0
        for integ in rt.enabled():
            result = pipeline.sync(integ)
            failed += not result.ok
            print(
                f"{integ.name}: {len(result.objects)} objects, {result.events} events, "
                f"{sum(d.total for d in result.digests)} selected events in "
                f"{len(result.digests)} digest(s)"
            )
            for err in result.errors.values():
                print(f"  error: {err}", file=sys.stderr)
    print(f"\nobjects under {root / 'bucket'}:")
    for path in sorted((root / "bucket").rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(root / 'bucket')}  {path.stat().st_size} bytes")
    print(f"digests under {root / 'outbox'}:")
    for path in sorted((root / "outbox").rglob("*.eml")):
        print(f"  {path.relative_to(root / 'outbox')}")
    first = next(iter(sorted((root / "bucket").rglob("*.log.gz"))), None)
    if first is not None:
        import gzip

        line = gzip.decompress(first.read_bytes()).split(b"\n", 1)[0].decode()
        print(f"\nfirst SYSLOG line of {first.name}:\n  {line}")
    return 1 if failed else 0


# --------------------------------------------------------------------------- parser


def _within(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` from ``low`` to ``high``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:  # also false for nan
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value

    return parse


def _metrics_arguments(p: argparse.ArgumentParser, key: str) -> None:
    p.add_argument(
        "--metrics-port",
        type=_within(int, 0, 65535),
        metavar="PORT",
        help=f"serve Prometheus metrics on /metrics, and /healthz and /readyz, on this port "
        f"(0: any free one, logged; default: [metrics] {key}, else none)",
    )
    p.add_argument(
        "--metrics-address",
        metavar="ADDR",
        help="the address to listen on (default: [metrics] address, else 127.0.0.1: this "
        "host only; 0.0.0.0 for every interface)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siem-plugins",
        description="Ship MetaDefender IT Access device and account events to S3 (JSON or "
        "SYSLOG) every 5 minutes, and email admins about the event types they chose.",
        epilog=EPILOG.format(docs=_docs()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"siem-plugins {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", metavar="FILE", help="config file (default: ./siem.toml or $SIEM_CONFIG)"
    )
    common.add_argument(
        "--plugins-dir",
        metavar="DIR",
        help="drop-in plugin folder (default: plugins_dir from the config, else hooks/ "
        "beside the config file)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging: -v our debug messages, -vv everything",
    )
    common.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log lines as text or as one JSON object per line (default: $SIEM_LOG_FORMAT, "
        "else log_format from the config, else text)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="sync every integration every interval",
        description="Sync every enabled integration every interval (default 5 "
        "minutes) until SIGTERM/SIGINT. Each sync catches up the backlog.",
    )
    p.add_argument("--interval", help="override the interval: seconds or 30s / 5m / 1h")
    p.add_argument(
        "--executor",
        choices=("local", "celery"),
        default="local",
        help="local: sync in this process (default); celery: enqueue one task per "
        "integration per interval for `siem-plugins worker` processes",
    )
    p.add_argument("--cycles", type=int, help=argparse.SUPPRESS)  # tests: stop after N ticks
    _metrics_arguments(p, "port")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "worker",
        parents=[common],
        help="run a Celery worker (scale-out)",
        description="Run a Celery worker that executes the sync tasks `run "
        "--executor celery` enqueues. Needs [celery] broker_url and the "
        "PostgreSQL store; at most one sync per integration runs fleet-wide.",
    )
    p.add_argument("--concurrency", type=int, default=2, help="sync processes (default 2)")
    p.add_argument(
        "--pool",
        default="prefork",
        choices=("prefork", "threads", "solo"),
        help="Celery pool (default prefork)",
    )
    _metrics_arguments(p, "worker_port")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "status",
        parents=[common],
        help="how every integration is doing; exit 1 if one needs attention",
        description="One row per integration and destination: state (ok, failing, "
        "stale, behind, never run, disabled), how many events wait and how old the "
        "oldest is, the last success and the last error. Exit status 1 when an enabled "
        "integration is failing, stale, behind or has never run, so it can be a "
        "monitoring check.",
    )
    p.add_argument(
        "-i",
        "--integration",
        action="append",
        metavar="NAME",
        help="only this integration, with its recent passes and pending intents (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--max-lag",
        metavar="DURATION",
        help="behind when the oldest unshipped event is older (default: 3 intervals, at least 5m)",
    )
    p.add_argument(
        "--max-lag-events",
        type=int,
        metavar="N",
        help="behind when more events wait (default: no limit)",
    )
    p.add_argument("--runs", type=int, default=10, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "store",
        parents=[common],
        help="manage the event store's schema",
        description="`store migrate` applies the PostgreSQL schema migrations "
        "(idempotent, safe to run from several processes); `store status` shows "
        "the schema version.",
    )
    p.add_argument("action", choices=("migrate", "status"))
    p.add_argument("--store", metavar="URL", help="store URL (default: [store] url)")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser(
        "sync",
        parents=[common],
        help="sync once and exit",
        description="Catch up the whole backlog once, in objects capped by "
        "max_events / max_bytes, then exit: 1 if any integration failed.",
    )
    p.add_argument(
        "--once",
        action="store_true",
        default=True,
        help="sync once and exit (the default; kept for clarity)",
    )
    p.add_argument(
        "-i",
        "--integration",
        action="append",
        metavar="NAME",
        help="only this integration (repeatable; may name a disabled one)",
    )
    p.add_argument(
        "--one-object",
        action="store_true",
        help="write at most one object per integration instead of catching up",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser(
        "dead-letters",
        parents=[common],
        help="list or replay events a formatter could not format",
        description="Events a formatter could not format are set aside (dead letters) so "
        "the events after them still ship. `list` shows them with the reason; `replay` "
        "formats them again (after a fix or a format change) and ships those that now "
        "format in one extra object per integration, exactly once.",
    )
    p.add_argument("action", choices=("list", "replay"))
    p.add_argument(
        "-i",
        "--integration",
        action="append",
        metavar="NAME",
        help="only this integration (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="list: machine-readable output")
    p.set_defaults(func=cmd_dead_letters)

    p = sub.add_parser(
        "replay",
        parents=[common],
        help="re-ship a range of events to a bucket or prefix, exactly once",
        description="Re-ship a range of an integration's shipped events (by id, or by "
        "event time) to its own sink, another integration's sink (--to) or its sink with "
        "options changed (--set prefix=restore/), e.g. after a customer lost their "
        "bucket. A job has a cursor of its own: the integration's cursors never move, "
        "and every event of the range lands in exactly one object of the job, through "
        "crashes (`replay resume` continues an unfinished job). `replay list` shows the "
        "jobs.",
        epilog="examples:\n"
        "  siem-plugins replay start -i acme --since 2026-11-01 --until 2026-11-08\n"
        "  siem-plugins replay start -i acme --from-id 1 --set bucket=acme-restore\n"
        "  siem-plugins replay start -i acme --from-id 5000 --to-id 9000 --to acme-archive\n"
        "  siem-plugins replay resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("start", "resume", "list"))
    p.add_argument(
        "-i",
        "--integration",
        action="append",
        metavar="NAME",
        help="the integration (start: exactly one; resume, list: only these)",
    )
    p.add_argument("--from-id", type=int, metavar="N", help="first event id to replay")
    p.add_argument(
        "--to-id", type=int, metavar="M", help="last event id (default: the sink's cursor)"
    )
    p.add_argument(
        "--since",
        metavar="TIME",
        help="events whose own time is at or after TIME (2026-11-01, or a date-time with a zone)",
    )
    p.add_argument("--until", metavar="TIME", help="... and before TIME (default: no bound)")
    p.add_argument("--to", metavar="NAME", help="write through this integration's sink")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change a sink option for the job (repeatable): bucket=..., prefix=...; "
        "secrets are refused (use --to)",
    )
    p.add_argument("--job", metavar="NAME", help="the job's name (default: the time now)")
    p.add_argument("--dry-run", action="store_true", help="start: say what would be replayed")
    p.add_argument("--json", action="store_true", help="list: machine-readable output")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "integrations",
        parents=[common],
        help="the integrations kept in the store (the settings API's)",
        description="Integrations kept as data, beside those of the config file: what the "
        "settings page and API save. `put FILE` saves one (a JSON or TOML table, validated "
        "exactly like siem.toml, its destinations probed, its secrets encrypted with "
        "SIEM_SECRET_KEYS); `run`, the Celery beat and the workers pick changes up at "
        "their next tick. Secrets are never shown.",
    )
    p.add_argument("action", choices=("list", "show", "put", "enable", "disable", "delete"))
    p.add_argument("target", nargs="?", metavar="NAME|FILE", help="the integration (put: a file)")
    p.add_argument("--account", help="list: only this account's")
    p.add_argument("--json", action="store_true", help="list: machine-readable output")
    p.add_argument("--no-probe", action="store_true", help="put: save without probing")
    p.add_argument(
        "--expect-version",
        type=int,
        metavar="N",
        help="put: refuse unless the stored version is N (0: it must be new)",
    )
    p.add_argument("--admin-name", help="who makes the change (default: this OS user)")
    p.add_argument("--admin-email", help="their address (default: user@host)")
    p.set_defaults(func=cmd_integrations)

    p = sub.add_parser(
        "secrets",
        parents=[common],
        help="make a key for stored secrets, or re-encrypt them with the newest",
        description="Stored secrets (the AWS secret keys the settings API saves) are "
        "encrypted with the keys in SIEM_SECRET_KEYS or SIEM_SECRET_KEYS_FILE, newest "
        "first. To rotate: `secrets new-key`, put the new key first, keep the old ones "
        "after it, restart, run `secrets rotate`, then drop the old keys.",
    )
    p.add_argument("action", choices=("new-key", "rotate"))
    p.set_defaults(func=cmd_secrets)

    p = sub.add_parser(
        "tokens",
        parents=[common],
        help="API tokens of the settings server",
        description="Tokens for the settings API and page. An account's token touches only "
        "that account; --operator makes one for every account. The token is printed once "
        "and kept only as a SHA-256 digest; `revoke` ends it (and its page sessions) at "
        "once.",
    )
    p.add_argument("action", choices=("create", "list", "revoke"))
    p.add_argument("id", nargs="?", help="revoke: the token's id (from `tokens list`)")
    p.add_argument("--account", help="create: the account it may touch; list: only its")
    p.add_argument("--operator", action="store_true", help="create: a token for every account")
    p.add_argument("--admin-name", help="create: whose token (named in config events)")
    p.add_argument("--admin-email", help="create: their address")
    p.add_argument("--label", help="create: a note (where it is used)")
    p.add_argument("--json", action="store_true", help="list: machine-readable output")
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the settings API and page",
        description="Serve the settings page (Settings > Integrations > SIEM Integration) "
        "and its API (/api/v1, described at /openapi.json) until SIGTERM. Saves are "
        "validated like siem.toml, probed, encrypted (SIEM_SECRET_KEYS) and picked up by "
        "`run` at its next tick. Put it behind a TLS-terminating proxy and pass "
        "--secure-cookies.",
    )
    p.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    p.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (the page is reached over HTTPS)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="prove the bucket matches the store",
        description="List each integration's objects (s3: one HEAD each; local: from the "
        "keys) and compare them with the store and the delivery state: gaps, overlaps, "
        "duplicates, counts that differ, objects the state does not explain, open "
        "multipart uploads. --deep also reads every object and compares it byte for "
        "byte with the store's events formatted again. Exit 1 on any finding, or if an "
        "integration named with -i cannot be verified (a sink other than s3 or local).",
    )
    p.add_argument(
        "-i",
        "--integration",
        action="append",
        metavar="NAME",
        help="only this integration (repeatable; default: every enabled one)",
    )
    p.add_argument("--deep", action="store_true", help="read every object and compare its bytes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "prune",
        parents=[common],
        help="delete the events every integration has shipped",
        description="Delete the events of each account that every integration shipping "
        "that account (enabled or not) has finished with on both destinations: ids at or "
        "below the lowest sink and notifier cursor. Events with a dead letter, or in a "
        "pending intent's range, stay; so do the events of accounts no integration ships "
        "(unless --orphans). Deletes in small transactions with a pause between them, so "
        "ingest and syncs carry on. --older-than, --orphans and the batch size default to "
        "[retention] of the config. Exit 1 if an account failed or another process is "
        "pruning.",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="report what would be deleted, delete nothing"
    )
    p.add_argument(
        "--older-than",
        metavar="AGE",
        help="only events whose own time (ts) is older: seconds or 12h / 30d",
    )
    p.add_argument(
        "--orphans",
        action="store_true",
        help="also delete the events of accounts that no integration ships",
    )
    p.add_argument(
        "--batch",
        type=_within(int, 100, 100_000),
        metavar="N",
        help="events per delete transaction, 100-100000 (default 5000)",
    )
    p.add_argument(
        "--pause",
        type=_within(float, 0, 60),
        metavar="SECONDS",
        help="pause between two delete transactions, 0-60 (default 0.11: a waiting writer gets in)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="load NDJSON events into the store",
        description="Validate NDJSON events (one per line, the documented JSON "
        "shape) and store the good ones. Each bad line is reported as "
        "file:line: field: reason. Each file is stored in one transaction: whole, or "
        "on a store error not at all (the run stops there). A file already stored for "
        "the account (same SHA-256) is skipped. Exit 1 if any line was rejected or "
        "any file not stored.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="NDJSON file, or - for stdin")
    p.add_argument(
        "--account",
        default="default",
        help="the account (tenant) the events belong to (default: default)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: [store] url of the config, else sqlite:///siem.db)",
    )
    p.add_argument("--rejects", metavar="FILE", help="copy rejected lines verbatim to FILE")
    p.add_argument(
        "--force",
        action="store_true",
        help="store a file again even if the account already has it (same SHA-256)",
    )
    p.add_argument(
        "--max-errors",
        type=int,
        default=50,
        metavar="N",
        help="print at most N rejections (default 50)",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "check",
        parents=[common],
        help="validate the config, probe destinations",
        description="Validate the config, then probe each integration's sink "
        "(write and delete a probe object) and notifier (connect, log in).",
    )
    p.add_argument("--no-probe", action="store_true", help="validate only")
    p.add_argument(
        "--print-config", action="store_true", help="print the config as loaded, secrets redacted"
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "plugins",
        parents=[common],
        help="list plugins and what they provide",
        description="List every loaded plugin: what it provides (with each component's "
        "description), where it came from, the hooks it implements; then the plugins "
        "disabled by SIEM_DISABLED_PLUGINS and those that failed to load. Exit status 1 "
        "if any plugin failed to load.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="generate events and sync them locally",
        description="Generate realistic device and account events into a fresh "
        "SQLite store, sync them to a local folder in JSON and SYSLOG, write the "
        "email digests to an outbox folder, and list what was written.",
    )
    p.add_argument(
        "--dir", default="siem-demo", help="working folder (default: siem-demo; emptied first)"
    )
    p.add_argument("--events", type=int, default=2000, help="events per account (default 2000)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The command line, else the environment, else the config file (see _config).
    env_format = os.environ.get("SIEM_LOG_FORMAT", "")
    if args.log_format is None and env_format:
        if env_format not in LOG_FORMATS:
            print(
                f"error: SIEM_LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)}, "
                f"got {env_format!r}",
                file=sys.stderr,
            )
            return 2
        args.log_format = env_format
    setup_logging(args.verbose, args.log_format or "text")
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        _tell(f"config error: {exc}")
        return 2
    except (UsageError, ListenError) as exc:
        _tell(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
