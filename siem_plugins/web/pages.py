"""The settings page: Settings > Integrations > SIEM Integration, rendered on the server.

No JavaScript: every action is an HTML form (``POST`` + redirect, or a re-rendered page
with its errors), styled by ``/static/style.css`` only, so the app's Content Security
Policy (``default-src 'self'``, no inline style or script) holds for every page.

Who is signed in comes from the session cookie, which names an API token
(``/login`` takes the token once); the token is checked again at every request, so
revoking it ends the session at the next page. Every form post but the login carries
the session's CSRF token. Another account's page answers exactly as a page that does
not exist: the model functions decide that, before anything else is looked at.

What the page saves is the stored document with the form laid over it: keys the form
does not show (``compression``, ``endpoint_url``, ...) stay; the secret access key and
the access key id, never sent to the browser, are kept when their fields are left empty.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from siem_plugins.control.store import StoredIntegration
from siem_plugins.runtime import Runtime
from siem_plugins.web import auth, model
from siem_plugins.web.auth import SESSION_MAX_AGE_S, Principal
from siem_plugins.web.model import SettingsError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent

#: The product's rule, in the product documentation's words.
NO_EVENT = "To save this configuration, it is required to select at least one event."
BAD_TOKEN = "That token is not valid."  # noqa: S105 (a message, not a password)
CSRF_FAILED = "The form expired or did not come from this site; reload the page and try again."
CONFLICT = "Someone saved these settings meanwhile; reload to see them."
UNREADABLE = "The form could not be read; reload the page and try again."

#: The largest form body read (the settings form is a few kilobytes).
MAX_FORM = 64 * 1024

#: Where each field of the document is shown: the id of its input (or group).
FIELD_IDS = {
    "sink.bucket": "bucket",
    "sink.region": "region",
    "sink.prefix": "prefix",
    "sink.access_key_id": "access_key_id",
    "sink.secret_access_key": "secret_access_key",
    "sink": "sink",
    "format": "format",
    "notify.events": "events",
    "notify.to": "recipients",
}
#: What the error summary calls each of them.
FIELD_LABELS = {
    "bucket": "Bucket name",
    "region": "Region",
    "prefix": "Prefix",
    "access_key_id": "Access key ID",
    "secret_access_key": "Secret access key",
    "sink": "AWS S3 bucket",
    "format": "Log format",
    "events": "Events that trigger an email",
    "recipients": "Recipients",
}
FORMATS = (("json", "JSON"), ("syslog", "SYSLOG"))
STATES = {
    "failing": "Failing",
    "stale": "Stale: no sync ended lately",
    "behind": "Behind",
    "never run": "Never synced",
    "ok": "OK",
    "disabled": "Disabled",
}

_templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
)


def static_files() -> StaticFiles:
    """The page's stylesheet, for ``app.mount("/static", ...)``."""
    return StaticFiles(directory=HERE / "static")


# --------------------------------------------------------------------------- helpers


def page_url(account: str, action: str = "") -> str:
    return f"/settings/{quote(account, safe='')}" + (f"/{action}" if action else "")


def home_of(principal: Principal) -> str:
    return page_url(principal.account) if principal.account is not None else "/"


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def signed_in(request: Request) -> Principal | None:
    """The session's principal; None (and the session cleared) when there is no session
    or its token is revoked or unknown."""
    token_id = request.session.get("token_id")
    sid = request.session.get("sid")
    if not isinstance(token_id, str) or not token_id or not isinstance(sid, str) or not sid:
        return None  # not signed in (the login form's own session, if any, stays)
    authenticator: auth.Authenticator = request.app.state.auth

    def live() -> Principal | None:
        # A session signed out is dead, even from a copy of its cookie.
        if authenticator.control.session_ended(sid):
            return None
        return authenticator.by_id(token_id)

    found = await run_in_threadpool(live)
    if found is None:
        request.session.clear()
    return found


class Form:
    """An ``application/x-www-form-urlencoded`` body, read with a size limit."""

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self.fields = fields

    def get(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""

    def all(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))

    @classmethod
    async def read(cls, request: Request) -> Form:
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        size = request.headers.get("content-length")
        if not kind and size in (None, "0"):
            kind = "application/x-www-form-urlencoded"  # no body: an empty form
        if kind != "application/x-www-form-urlencoded":
            raise SettingsError(400, UNREADABLE)
        if size is not None and (not size.isdigit() or int(size) > MAX_FORM):
            raise SettingsError(413, "The form is larger than this page ever sends.")
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_FORM:
                raise SettingsError(413, "The form is larger than this page ever sends.")
        try:
            fields = parse_qs(
                data.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=200,
            )
        except ValueError:  # not UTF-8, or too many fields
            raise SettingsError(400, UNREADABLE) from None
        return cls(fields)


def check_csrf(request: Request, form: Form) -> None:
    if not auth.csrf_ok(request.session.get("csrf"), form.get("csrf_token")):
        raise SettingsError(403, CSRF_FAILED)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    return _templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, exc: SettingsError) -> Response:
    """An error as a page: its status and message (escaped), nothing else. A 404 of
    another account and of a page that does not exist are the same bytes."""
    message = str(exc) or next((m for _, m in exc.errors if m), "")
    headings = {
        400: "The request could not be read",
        401: "Sign in needed",
        403: "Not allowed",
        404: "Page not found",
        409: "Saved meanwhile",
        413: "Too large",
        422: "Not saved",
    }
    return render(
        request,
        "error.html",
        {
            "principal": None,
            "status": exc.status,
            "heading": headings.get(exc.status, "Something went wrong"),
            "message": message[:1].upper() + message[1:],
        },
        status_code=exc.status,
    )


# --------------------------------------------------------------------------- the form


@dataclass
class Values:
    """What the form shows: the stored settings, or what was just typed."""

    enabled: bool = False
    bucket: str = ""
    region: str = ""
    prefix: str = ""
    access_key_id: str = ""
    format: str = "json"
    events: list[str] = field(default_factory=list)
    recipients: str = ""

    @classmethod
    def of_document(cls, document: Mapping[str, Any], enabled: bool) -> Values:
        """The form's values of a stored document as :func:`model.shown` shows it (the
        access key id shortened, secrets as "set"): neither goes into a field."""
        sink = document.get("sink")
        sink = sink if isinstance(sink, Mapping) else {}
        notify = document.get("notify")
        notify = notify if isinstance(notify, Mapping) else {}
        fmt = document.get("format", "json")
        if isinstance(fmt, Mapping):
            fmt = fmt.get("type", "")
        events = notify.get("events", [])
        to = notify.get("to", [])
        return cls(
            enabled=enabled,
            bucket=_text(sink.get("bucket")),
            region=_text(sink.get("region")),
            prefix=_text(sink.get("prefix")),
            format=_text(fmt),
            events=[events] if isinstance(events, str) else [str(e) for e in events],
            recipients="\n".join([to] if isinstance(to, str) else [str(t) for t in to]),
        )

    @classmethod
    def of_form(cls, form: Form) -> Values:
        return cls(
            enabled=form.get("enabled") == "on",
            bucket=form.get("bucket").strip(),
            region=form.get("region").strip(),
            prefix=form.get("prefix").strip(),
            access_key_id=form.get("access_key_id").strip(),
            format=form.get("format").strip() or "json",
            events=[e for e in dict.fromkeys(form.all("events")) if e],
            recipients=form.get("recipients"),
        )

    def to_list(self) -> list[str]:
        return [a.strip() for a in re.split(r"[,;\r\n]+", self.recipients) if a.strip()]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def merged(stored: StoredIntegration | None, values: Values, secret: str) -> dict[str, Any]:
    """The document to save: the stored one (sealed secrets as they are: the save keeps
    them) with the form laid over it. An empty optional field is left out; an empty
    access key id or secret keeps the stored one."""
    base = stored.document if stored is not None else {}
    document = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("name", "account")}
    document["enabled"] = values.enabled
    fmt = document.get("format")
    if not (isinstance(fmt, Mapping) and fmt.get("type") == values.format):
        document["format"] = values.format  # a table of the same type keeps its options
    old_sink = document.get("sink")
    sink = dict(old_sink) if isinstance(old_sink, Mapping) else {}
    if sink.get("type", "s3") != "s3":
        sink = {}  # another kind of sink's options mean nothing to S3
    sink["type"] = "s3"
    for key in ("bucket", "region", "prefix"):
        value = getattr(values, key)
        if value:
            sink[key] = value
        else:
            sink.pop(key, None)
    if values.access_key_id:
        sink["access_key_id"] = values.access_key_id
    if secret:
        sink["secret_access_key"] = secret
    document["sink"] = sink
    old_notify = document.get("notify")
    notify = dict(old_notify) if isinstance(old_notify, Mapping) else {}
    if notify.get("type", "email") != "email":
        notify = {}
    notify["type"] = "email"
    recipients = values.to_list()
    if recipients:
        notify["to"] = recipients
    else:
        notify.pop("to", None)  # the operator's [smtp] default, if any
    notify["events"] = values.events
    document["notify"] = notify
    return document


def located(errors: list[tuple[str, str]]) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Errors next to their fields (by input id) and the summary's entries (each with a
    link to its field when it has one)."""
    by_id: dict[str, list[str]] = {}
    summary: list[dict[str, str]] = []
    for name, message in errors:
        target = FIELD_IDS.get(name) or (FIELD_IDS["format"] if name.startswith("format.") else "")
        if target:
            by_id.setdefault(target, []).append(message)
            summary.append({"text": f"{FIELD_LABELS[target]}: {message}", "href": f"#{target}"})
        else:
            summary.append({"text": message, "href": ""})
    return by_id, summary


# --------------------------------------------------------------------------- health


def when(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return ""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} days"


def health_rows(health: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for d in health.get("destinations", []):
        events = d.get("lag_events")
        if events is None:
            waiting = "unknown"
        elif events == 0:
            waiting = "none"
        else:
            noun = "event" if events == 1 else "events"
            waiting = f"{events} {noun} (oldest: {duration(d.get('lag_seconds') or 0)} ago)"
        rows.append(
            {
                "destination": "Bucket" if d.get("destination") == "sink" else "Email",
                "where": str(d.get("where", "")),
                "state": STATES.get(d.get("state", ""), str(d.get("state", ""))),
                "state_class": str(d.get("state", "")).replace(" ", "-"),
                "last_success": when(d.get("last_success")) or "never synced",
                "last_attempt": when(d.get("last_attempt")) or "never",
                "waiting": waiting,
                "last_error": str(d.get("last_error") or ""),
            }
        )
    return rows


# --------------------------------------------------------------------------- the page


def event_groups(selected: list[str]) -> list[dict[str, Any]]:
    """Device and Account, as the product lists them; a selected event type of the
    operator's own (``[store] log_types``) is shown too, so a save keeps it."""
    groups: dict[str, list[dict[str, str]]] = {}
    for e in model.event_types():
        groups.setdefault(e["type"], []).append(e)
    known = {e["log_type"] for events in groups.values() for e in events}
    others = [{"log_type": t, "description": ""} for t in selected if t not in known]
    if others:
        groups["Other"] = others
    return [{"name": name, "events": events} for name, events in groups.items()]


def folder_of_tests(sink: Mapping[str, Any], account: str) -> str:
    """Where the test object goes: ``{prefix}{account}/test/`` (the sink adds the
    prefix's missing ``/``)."""
    prefix = _text(sink.get("prefix"))
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"{prefix}{account}/test/"


def settings_page(
    request: Request,
    rt: Runtime,
    who: Principal,
    account: str,
    *,
    values: Values | None = None,
    version: int | None = None,
    errors: list[tuple[str, str]] | None = None,
    status: str = "",
    retype_secret: bool = False,
    status_code: int = 200,
) -> Response:
    """The page of ``account`` (raises :class:`SettingsError` 404 for one the caller may
    not see, before anything is read)."""
    stored = model.stored_of(rt, who, account)
    shown = model.as_dict(stored) if stored is not None else None
    document: Mapping[str, Any] = shown["document"] if shown else {}
    if values is None:
        values = Values.of_document(document, stored.enabled if stored else False)
    sink = document.get("sink")
    sink = sink if isinstance(sink, Mapping) else {}
    health: list[dict[str, str]] | None = None
    health_error = ""
    if stored is not None:
        try:
            health = health_rows(model.health_of(rt, who, account))
        except SettingsError:
            raise
        except Exception:
            log.exception("health of %s", stored.name)
            health_error = "The health of this integration cannot be read right now."
    by_id, summary = located(errors or [])
    return render(
        request,
        "settings.html",
        {
            "principal": who,
            "csrf": request.session.get("csrf", ""),
            "account": account,
            "values": values,
            "version": (stored.version if stored else 0) if version is None else version,
            "stored": shown,
            "secret_stored": sink.get("secret_access_key") == "set",
            "stored_key_id": _text(sink.get("access_key_id")),
            "retype_secret": retype_secret,
            "errors": by_id,
            "summary": summary,
            "status": status,
            "formats": FORMATS,
            "event_groups": event_groups(values.events),
            "health": health,
            "health_error": health_error,
            "updated": when(stored.updated) if stored else "",
            "folder_of_tests": folder_of_tests(sink, account),
            "urls": {
                "save": page_url(account),
                "test_object": page_url(account, "test-object"),
                "test_email": page_url(account, "test-email"),
            },
        },
        status_code=status_code,
    )


def save_page(request: Request, rt: Runtime, who: Principal, account: str, form: Form) -> Response:
    stored = model.stored_of(rt, who, account)  # another account: 404 before anything else
    values = Values.of_form(form)
    secret = form.get("secret_access_key").strip()
    try:
        version = int(form.get("version") or "0")
    except ValueError:
        raise SettingsError(400, UNREADABLE) from None
    again = bool(secret)

    def refused(errors: list[tuple[str, str]], status_code: int) -> Response:
        return settings_page(
            request, rt, who, account, values=values, version=version, errors=errors,
            retype_secret=again, status_code=status_code,
        )  # fmt: skip

    if not values.events:
        return refused([("notify.events", NO_EVENT)], 422)
    try:
        model.save_integration(
            rt,
            who,
            account,
            merged(stored, values, secret),
            expected_version=version,
            via="the settings page",
        )
    except SettingsError as exc:
        if exc.status == 409:
            return refused([("", CONFLICT)], 409)
        if exc.status == 422:
            return refused([(f, m or str(exc)) for f, m in exc.errors], 422)
        raise
    return see_other(page_url(account) + "?saved=1")


def send_test(request: Request, rt: Runtime, who: Principal, account: str, what: str) -> Response:
    model.stored_of(rt, who, account)  # another account: 404 before anything else
    try:
        if what == "object":
            done = model.send_test_object(rt, who, account)
            status = f"Test object written to {done['location']}."
        else:
            done = model.send_test_email(rt, who, account)
            status = f"Test email sent through {done['location']}."
    except SettingsError as exc:
        if exc.status != 422:
            raise
        label = "The test object" if what == "object" else "The test email"
        message = str(exc) or "; ".join(m for _, m in exc.errors)
        return settings_page(
            request, rt, who, account, errors=[("", f"{label} failed: {message}")],
            status_code=422,
        )  # fmt: skip
    return settings_page(request, rt, who, account, status=status)


def router() -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    @pages.get("/")
    async def home(request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return see_other("/login")
        if who.account is not None:
            return see_other(page_url(who.account))
        return render(request, "choose.html", _chooser(request, who))

    @pages.get("/settings")
    async def choose(request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return see_other("/login")
        if who.account is not None:
            return see_other(page_url(who.account))
        account = request.query_params.get("account", "").strip()
        from siem_plugins.keys import InvalidAccount, check_account

        try:
            check_account(account)
        except InvalidAccount:
            context = _chooser(request, who, account=account)
            context["error"] = (
                "Type an account: 1 to 128 letters, digits and . _ @ + -, starting with a "
                "letter or digit."
            )
            return render(request, "choose.html", context, status_code=400)
        return see_other(page_url(account))

    @pages.get("/login")
    async def login_form(request: Request) -> Response:
        bye = request.query_params.get("signed_out") == "1"
        # A login form token in a session of its own: a login posted from another site
        # (which would sign the victim in as someone else) carries no cookie and is refused.
        if not isinstance(request.session.get("login_csrf"), str):
            request.session.clear()
            request.session["login_csrf"] = auth.new_csrf()
        context = _login(status="You have signed out." if bye else "")
        context["csrf"] = request.session["login_csrf"]
        return render(request, "login.html", context)

    @pages.post("/login")
    async def login(request: Request) -> Response:
        form = await Form.read(request)
        if not auth.csrf_ok(request.session.get("login_csrf"), form.get("csrf_token")):
            raise SettingsError(403, CSRF_FAILED)
        authenticator: auth.Authenticator = request.app.state.auth
        who = await run_in_threadpool(authenticator.token, form.get("token"))
        if who is None:
            context = _login(error=BAD_TOKEN)
            context["csrf"] = request.session["login_csrf"]
            return render(request, "login.html", context, status_code=401)
        request.session.clear()  # a new session: nothing of a former one carries over
        request.session["sid"] = auth.new_csrf()
        request.session["token_id"] = who.token_id
        request.session["csrf"] = auth.new_csrf()
        return see_other(home_of(who))

    @pages.post("/logout")
    async def logout(request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return see_other("/login")
        check_csrf(request, await Form.read(request))
        sid = request.session.get("sid")
        authenticator: auth.Authenticator = request.app.state.auth
        if isinstance(sid, str):
            await run_in_threadpool(
                authenticator.control.end_session, sid, keep_s=SESSION_MAX_AGE_S
            )
        request.session.clear()
        return see_other("/login?signed_out=1")

    @pages.get("/settings/{account}")
    async def page(account: str, request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return see_other("/login")
        saved = request.query_params.get("saved") == "1"
        rt = request.app.state.rt

        def build() -> Response:
            return settings_page(request, rt, who, account, status="Saved." if saved else "")

        return await run_in_threadpool(build)

    @pages.post("/settings/{account}")
    async def save(account: str, request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return see_other("/login")
        form = await Form.read(request)
        check_csrf(request, form)
        return await run_in_threadpool(save_page, request, request.app.state.rt, who, account, form)

    @pages.post("/settings/{account}/test-object")
    async def test_object(account: str, request: Request) -> Response:
        return await _test(request, account, "object")

    @pages.post("/settings/{account}/test-email")
    async def test_email(account: str, request: Request) -> Response:
        return await _test(request, account, "email")

    return pages


async def _test(request: Request, account: str, what: str) -> Response:
    who = await signed_in(request)
    if who is None:
        return see_other("/login")
    check_csrf(request, await Form.read(request))
    return await run_in_threadpool(send_test, request, request.app.state.rt, who, account, what)


def _login(*, error: str = "", status: str = "") -> dict[str, Any]:
    return {"principal": None, "error": error, "status": status}


def _chooser(request: Request, who: Principal, account: str = "") -> dict[str, Any]:
    return {
        "principal": who,
        "csrf": request.session.get("csrf", ""),
        "account": account,
        "error": "",
    }
