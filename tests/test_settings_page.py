"""The settings page (Settings > Integrations > SIEM Integration), served by
``siem-plugins serve`` as users run it, against real S3 (moto over HTTP) and SMTP
(aiosmtpd): an administrator signs in with a token and sets the integration up in a real
browser (Debian's chromium, headless), with the keyboard; the product's rule (at least
one event) refuses a save next to the events; the saved settings, the config event, the
test object and the health are checked where they land. Then plain HTTP, as an adversary
would: bad tokens, forged cookies, missing CSRF tokens, another account's page, a revoked
token, secrets and HTML injection."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from siem_plugins.control import tokens
from siem_plugins.control.secrets import generate_key
from siem_plugins.control.store import StoredIntegration, open_control
from siem_plugins.storage import open_store
from siem_plugins.testing.s3server import S3Server
from siem_plugins.testing.smtpserver import SMTPServer

NO_EVENT = "To save this configuration, it is required to select at least one event."
CSRF_FAILED = "The form expired or did not come from this site; reload the page and try again."
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-page-secret-42"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parent.parent


def credentials(s3: S3Server) -> tuple[str, str]:
    """Keys the bucket accepts: moto takes any (so ours are recognisable in a page's
    source); an external endpoint, its own."""
    return (s3.access_key_id, s3.secret_access_key) if s3.external else (ACCESS_KEY, SECRET)


class Server:
    """``siem-plugins serve`` in a subprocess, with its config, keys and tokens."""

    def __init__(self, tmp: Path, s3: S3Server, smtp: SMTPServer) -> None:
        self.tmp = tmp
        self.db = tmp / "siem.db"
        self.cfg = tmp / "siem.toml"
        self.cfg.write_text(
            f'[store]\nurl = "sqlite:///{self.db}"\n'
            f'[s3]\nendpoint_url = "{s3.endpoint_url}"\nregion = "{s3.region}"\n'
            f'[smtp]\nhost = "{smtp.host}"\nport = {smtp.port}\nsecurity = "none"\n'
            f'from = "SIEM <siem@example.com>"\ntimeout = 5\n'
            f'client_hostname = "siem-test.example"\n'
        )
        self.env = {**os.environ, "SIEM_SECRET_KEYS": generate_key()}
        self.env.pop("SIEM_SECRET_KEYS_FILE", None)
        self.env.pop("SIEM_SESSION_SECRET", None)
        self.log = tmp / "serve.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "siem_plugins", "serve", "-c", str(self.cfg), "--port", "0"],
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"serving on (http://\S+)", self.log.read_text())
            if found:
                self.url = found.group(1)
                break
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not start: " + self.log.read_text())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "siem_plugins", *args, "-c", str(self.cfg)],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def token(self, account: str | None, name: str = "Jane Admin") -> str:
        scope = ["--account", account] if account else ["--operator"]
        email = f"{name.split()[0].lower()}@{account or 'operator'}.example"
        out = self.cli("tokens", "create", *scope, "--admin-name", name, "--admin-email", email)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)

    def stored(self) -> tuple[int, list[StoredIntegration]]:
        control = open_control(f"sqlite:///{self.db}")
        try:
            return control.generation(), control.list()
        finally:
            control.close()

    def events(self, account: str) -> list[dict[str, Any]]:
        store = open_store(f"sqlite:///{self.db}")
        try:
            batches = store.read(account, 1, 10**9)
            return [json.loads(e.raw) for batch in batches for e in batch]
        finally:
            store.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path, s3_server: S3Server, smtp_server: SMTPServer) -> Iterator[Server]:
    started = Server(tmp_path, s3_server, smtp_server)
    yield started
    started.stop()


# --------------------------------------------------------------------------- HTTP helpers


def login(server: Server, token: str) -> httpx.Client:
    """A client signed in with ``token`` (its session cookie set)."""
    client = server.client()
    form = client.get("/login")
    got = client.post("/login", data={"token": token, "csrf_token": csrf_of(form.text)})
    assert got.status_code == 303, got.text
    return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def version_of(html: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', html)
    assert found, "no version field in the page"
    return found.group(1)


def form(
    bucket: str,
    s3: S3Server,
    *,
    events: tuple[str, ...] = ("exempt_all", "config"),
    **fields: str,
) -> dict[str, Any]:
    key, secret = credentials(s3)
    data: dict[str, Any] = {
        "enabled": "on",
        "bucket": bucket,
        "region": s3.region,
        "prefix": "siem/",
        "access_key_id": key,
        "secret_access_key": secret,
        "format": "json",
        "events": list(events),
        "recipients": "soc@acme.example",
    }
    data.update(fields)
    return data


def save(client: httpx.Client, account: str, data: dict[str, Any]) -> httpx.Response:
    page = client.get(f"/settings/{account}")
    assert page.status_code == 200, page.text
    return client.post(
        f"/settings/{account}",
        data={**data, "csrf_token": csrf_of(page.text), "version": version_of(page.text)},
    )


# --------------------------------------------------------------------------- the browser


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt install chromium-driver)")
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER} (apt install chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations
    profile = tmp_path / "chromium-profile"
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,1600",
    ):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1280, 1600)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


#: Every visible field has a label; every aria-describedby names elements that exist;
#: one h1; a lang; a title.
A11Y_PROBLEMS = """
const problems = [];
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  if (!el.labels || el.labels.length === 0) problems.push('no label: ' + (el.id || el.name));
}
for (const el of document.querySelectorAll('[aria-describedby]')) {
  for (const id of el.getAttribute('aria-describedby').split(/\\s+/)) {
    if (!document.getElementById(id)) problems.push('describedby missing: ' + id);
  }
}
for (const el of document.querySelectorAll('[aria-invalid="true"]')) {
  const ids = (el.getAttribute('aria-describedby') || '').split(/\\s+/);
  if (!ids.some(id => id.endsWith('-error'))) problems.push('invalid without error: ' + el.id);
}
for (const fs of document.querySelectorAll('fieldset')) {
  if (!fs.querySelector(':scope > legend')) problems.push('fieldset without legend');
}
for (const b of document.querySelectorAll('button')) {
  if (b.type !== 'submit') problems.push('button not submit: ' + b.textContent);
}
if (document.querySelectorAll('h1').length !== 1) problems.push('h1 count');
if (document.documentElement.lang !== 'en') problems.push('lang');
if (!document.title) problems.push('title');
if (document.querySelector('script, [style]')) problems.push('inline script or style');
return problems;
"""


def active(driver: Any) -> str:
    """What has the keyboard focus: an element's id, else its tag and text."""
    el = driver.switch_to.active_element
    return str(el.get_attribute("id") or f"{el.tag_name}:{el.text.strip()}")


def press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def tab_to(driver: Any, target: str, limit: int = 80) -> list[str]:
    """Press Tab until ``target`` has the focus; the ids focused on the way."""
    from selenium.webdriver.common.keys import Keys

    seen = []
    for _ in range(limit):
        press(driver, Keys.TAB)
        seen.append(active(driver))
        if seen[-1] == target:
            return seen
    raise AssertionError(f"Tab never reached {target}: {seen}")


@contextlib.contextmanager
def next_page(driver: Any) -> Iterator[None]:
    """Wait until what the block does (a submit, a click) has loaded the next page."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    yield
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def page_csrf(driver: Any) -> str:
    """The session's CSRF token, from the session cookie (signed, not encrypted)."""
    cookie = driver.get_cookie("siem_session")["value"]
    payload = cookie.split(".")[0]
    session = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    return str(session["csrf"])


def test_an_administrator_sets_up_the_integration_with_the_keyboard(
    server: Server,
    browser: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
    tmp_path: Path,
) -> None:

    driver = browser
    token = server.token("acme")
    key, secret = credentials(s3_server)
    # The account's events are in the store, and `run` is running, before anyone sets
    # the integration up: the save must reach it at its next tick, without a restart.
    from siem_plugins.demo import generate
    from siem_plugins.events import canonicalize
    from siem_plugins.storage import SQLiteStore

    store = SQLiteStore(server.db)
    store.append("acme", [canonicalize(e) for e in generate(20, seed=4)])
    store.close()
    run_log = tmp_path / "run.log"
    with run_log.open("wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "siem_plugins", "run", "-c", str(server.cfg),
             "--interval", "1s"],
            stderr=out, env=server.env, start_new_session=True,
        )  # fmt: skip
    try:
        shipped_and_told(server, driver, s3_server, s3_bucket, smtp_server, tmp_path, run_log,
                         token=token, key=key, secret=secret)  # fmt: skip
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=60)


def shipped_and_told(
    server: Server,
    driver: Any,
    s3_server: S3Server,
    s3_bucket: str,
    smtp_server: SMTPServer,
    tmp_path: Path,
    run_log: Path,
    *,
    token: str,
    key: str,
    secret: str,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(server.url + "/")
    assert driver.current_url == server.url + "/login"
    assert driver.execute_script(A11Y_PROBLEMS) == []
    with next_page(driver):
        driver.find_element(By.ID, "token").send_keys(token, Keys.ENTER)
    assert driver.current_url == server.url + "/settings/acme"
    assert driver.find_element(By.TAG_NAME, "h1").text == "SIEM Integration"
    assert "Jane Admin" in driver.find_element(By.CLASS_NAME, "who").text
    assert driver.find_element(By.CLASS_NAME, "account").text == "acme"
    assert driver.execute_script(A11Y_PROBLEMS) == []

    # The whole form with the keyboard, in the order it reads: Tab, typing, Space.
    before_form = tab_to(driver, "enabled")
    assert before_form == ["a:Skip to main content", "button:Sign out", "enabled"]
    press(driver, Keys.SPACE)
    typed = [s3_bucket, s3_server.region, "siem/", key, secret]
    for field, text in zip(
        ["bucket", "region", "prefix", "access_key_id", "secret_access_key"], typed, strict=True
    ):
        press(driver, Keys.TAB)
        assert active(driver) == field
        press(driver, text)
    press(driver, Keys.TAB)
    assert active(driver) == "format-json"  # the radio group is one stop, JSON selected
    order = tab_to(driver, "recipients")
    checkboxes = [e.get_attribute("id") for e in driver.find_elements(By.NAME, "events")]
    assert order == [*checkboxes, "recipients"]  # every event, Device then Account
    assert checkboxes[0] == "event-added" and "event-config" in checkboxes
    press(driver, "soc@acme.example")
    assert tab_to(driver, "button:Save") == ["button:Save"]
    with next_page(driver):
        press(driver, Keys.ENTER)

    # No event selected: refused, with the product's sentence next to the events.
    error = driver.find_element(By.ID, "events-error")
    assert error.get_attribute("textContent").strip() == f"Error: {NO_EVENT}"  # "Error: " hidden
    assert error.is_displayed() and error.text.endswith(NO_EVENT)
    assert error.find_element(By.XPATH, "..").get_attribute("id") == "events"
    described = driver.execute_script(
        "return document.getElementById('events').getAttribute('aria-describedby')"
    )
    assert "events-error" in described.split()
    summary = driver.find_element(By.CSS_SELECTOR, ".error-summary[role=alert]")
    assert summary.find_element(By.TAG_NAME, "a").get_attribute("href").endswith("#events")
    assert driver.execute_script(A11Y_PROBLEMS) == []
    assert "no stored integrations" in server.cli("integrations", "list").stdout
    assert server.stored() == (0, [])
    # What was typed is kept, except the secret.
    assert driver.find_element(By.ID, "bucket").get_attribute("value") == s3_bucket
    assert driver.find_element(By.ID, "recipients").get_attribute("value") == "soc@acme.example"
    assert driver.find_element(By.ID, "secret_access_key").get_attribute("value") == ""
    assert driver.find_element(By.ID, "enabled").is_selected()
    screenshot(driver, tmp_path / "settings-page-refused.png")

    # The summary's link leads to the events; then the secret again, two events, Save.
    focused = driver.switch_to.active_element.get_attribute("class") or ""
    assert "error-summary" in focused  # autofocus: the summary is read first
    press(driver, Keys.TAB)
    press(driver, Keys.ENTER)
    assert driver.current_url.endswith("#events")
    driver.find_element(By.ID, "secret_access_key").send_keys(secret)
    press(driver, Keys.TAB)
    assert active(driver) == "format-json"
    tab_to(driver, "event-exempt_all")
    press(driver, Keys.SPACE)
    tab_to(driver, "event-config")
    press(driver, Keys.SPACE)
    tab_to(driver, "button:Save")
    with next_page(driver):
        press(driver, Keys.ENTER)

    status = driver.find_element(By.CSS_SELECTOR, "[role=status]")
    assert status.text == "Saved."
    assert driver.current_url == server.url + "/settings/acme?saved=1"
    _, (stored,) = server.stored()
    assert (stored.name, stored.account, stored.version, stored.enabled) == (
        "acme",
        "acme",
        1,
        True,
    )
    assert stored.document["notify"]["events"] == ["exempt_all", "config"]
    assert stored.document["notify"]["to"] == ["soc@acme.example"]
    assert stored.document["sink"]["bucket"] == s3_bucket
    assert stored.document["sink"]["secret_access_key"].startswith("fernet:")
    assert "acme: account acme, version 1, enabled" in server.cli("integrations", "list").stdout
    source = driver.page_source
    assert secret not in source and token not in source and key not in source
    csrf = page_csrf(driver)
    assert source.count(csrf) == source.count('name="csrf_token"') == 4  # 4 forms, no more
    assert "A secret is stored; leave empty to keep it" in source
    assert f"Stored: {key[:4]}…{key[-4:]}; leave empty to keep it." in source
    (event,) = [e for e in server.events("acme") if e.get("admin_email") == "jane@acme.example"]
    assert (event["log_type"], event["type"], event["admin_name"]) == (
        "config", "Account", "Jane Admin"
    )  # fmt: skip
    assert event["details"].startswith("Administrator Jane Admin (jane@acme.example) changed")
    # `run`'s next tick ships the account's events and the config event to the bucket,
    # and the digest of the selected ones reaches the mail server; no restart.
    client = s3_server.client()

    def shipped() -> list[str]:
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix="siem/acme/")
        return [o["Key"] for o in listing.get("Contents", []) if "/test/" not in o["Key"]]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (shipped() and smtp_server.messages):
        time.sleep(0.2)
    (key_shipped,) = shipped()
    body = gzip.decompress(client.get_object(Bucket=s3_bucket, Key=key_shipped)["Body"].read())
    lines = [json.loads(line) for line in body.splitlines()]
    assert len(lines) == 21 and lines[-1]["log_type"] == "config", run_log.read_text()
    (digest,) = smtp_server.messages
    assert digest.rcpt_tos == ["soc@acme.example"]
    assert "stored integrations: 1 in use (1 added" in run_log.read_text()
    # The health, once the page is reloaded: both destinations synced.
    deadline = time.monotonic() + 10
    while True:
        driver.get(server.url + "/settings/acme")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.health tbody tr")
        if all("OK" in r.text for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [r.find_element(By.TAG_NAME, "th").text.split("\n")[0] for r in rows] == [
        "Bucket", "Email"
    ]  # fmt: skip
    assert all("OK" in r.text and "never" not in r.text.lower() for r in rows), [
        r.text for r in rows
    ]
    assert driver.execute_script(A11Y_PROBLEMS) == []
    screenshot(driver, tmp_path / "settings-page.png", docs=True)

    # The two tests reach the real bucket and the real mail server.
    with next_page(driver):
        driver.find_element(By.XPATH, "//button[normalize-space()='Send test object']").click()
    status = driver.find_element(By.CSS_SELECTOR, "[role=status]")
    found = re.fullmatch(rf"Test object written to s3://{s3_bucket}/(\S+)\.", status.text)
    assert found, status.text
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="siem/acme/test/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [found.group(1)]
    with next_page(driver):
        driver.find_element(By.XPATH, "//button[normalize-space()='Send test email']").click()
    status = driver.find_element(By.CSS_SELECTOR, "[role=status]")
    assert status.text.startswith("Test email sent through smtp://"), status.text
    assert [m.rcpt_tos for m in smtp_server.messages] == [["soc@acme.example"]] * 2

    # Sign out: the session is over.
    with next_page(driver):
        driver.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
    assert driver.current_url == server.url + "/login?signed_out=1"
    assert driver.find_element(By.CSS_SELECTOR, "[role=status]").text == "You have signed out."
    driver.get(server.url + "/settings/acme")
    assert driver.current_url == server.url + "/login"
    log = server.log.read_text()
    assert secret not in log and token not in log
    # Nothing the browser refused or failed to load (a CSP violation is logged as one),
    # but the refused save's own answer (422, as a refused form should be).
    logged = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert [m for m in logged if "/settings/acme - " not in m or "422" not in m] == []
    assert len(logged) == 1


def screenshot(driver: Any, path: Path, *, docs: bool = False) -> None:
    """The whole page (the window made as tall as it) to ``path``; with ``docs`` and
    SIEM_UPDATE_SCREENSHOT=1, to docs/settings-page.png too."""
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(1280, max(1600, int(height) + int(chrome)))
    try:
        assert driver.save_screenshot(str(path))
        assert path.read_bytes().startswith(b"\x89PNG")
        if docs and os.environ.get("SIEM_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(path, ROOT / "docs" / "settings-page.png")
    finally:
        driver.set_window_size(1280, 1600)


# --------------------------------------------------------------------------- plain HTTP


def test_a_bad_token_is_refused_without_saying_why(server: Server) -> None:
    good = server.token("acme")
    revoked = server.token("acme", name="Former Admin")
    parsed = tokens.parse(revoked)
    assert parsed is not None
    assert server.cli("tokens", "revoke", parsed[0]).returncode == 0
    wrong_secret = good[: -len(parsed[1])] + "A" * len(parsed[1])
    bodies = set()
    with server.client() as client:
        csrf = csrf_of(client.get("/login").text)
        for bad in ("", "garbage", revoked, wrong_secret, good + "x"):
            got = client.post("/login", data={"token": bad, "csrf_token": csrf})
            assert got.status_code == 401, (bad, got.text)
            assert "That token is not valid." in got.text
            assert client.get("/settings/acme").headers["location"] == "/login"
            bodies.add(got.text)
        assert len(bodies) == 1  # revoked, wrong or malformed: all alike
        # A token in the URL is never taken.
        assert client.get("/login", params={"token": good}).status_code == 200
        assert client.get("/settings/acme").headers["location"] == "/login"
        csrf = csrf_of(client.get("/login").text)
        got = client.post("/login", params={"token": good}, data={"csrf_token": csrf})
        assert got.status_code == 401
        assert client.get("/").headers["location"] == "/login"
    # A login posted from another site carries no cookie of ours, so no login form
    # token: refused, even with the right API token (no one is signed in unawares).
    with server.client() as fresh:
        got = fresh.post("/login", data={"token": good, "csrf_token": "forged"})
        assert got.status_code == 403
        assert fresh.get("/settings/acme").headers["location"] == "/login"


def test_a_post_without_the_csrf_token_changes_nothing(
    server: Server, s3_server: S3Server, s3_bucket: str
) -> None:
    client = login(server, server.token("acme"))
    page = client.get("/settings/acme")
    data = {**form(s3_bucket, s3_server), "version": version_of(page.text)}
    before = server.stored()
    for csrf in (None, "", "forged-" + csrf_of(page.text)):
        payload = data if csrf is None else {**data, "csrf_token": csrf}
        for path in ("/settings/acme", "/settings/acme/test-object", "/logout"):
            got = client.post(path, data=payload)
            assert got.status_code == 403, (path, got.text)
            assert CSRF_FAILED in got.text
    assert server.stored() == before == (0, [])
    assert server.events("acme") == []
    assert client.get("/settings/acme").status_code == 200  # still signed in
    # With it, the same form saves.
    assert save(client, "acme", form(s3_bucket, s3_server)).status_code == 303


def test_a_forged_session_cookie_leads_to_the_login(server: Server) -> None:
    token = server.token("acme")
    parsed = tokens.parse(token)
    assert parsed is not None
    session = base64.b64encode(json.dumps({"token_id": parsed[0], "csrf": "x"}).encode())
    for cookie in (session.decode(), session.decode() + ".AAAAAA.forged-signature", "null"):
        with server.client() as client:
            client.cookies.set("siem_session", cookie)
            for path in ("/", "/settings/acme"):
                got = client.get(path)
                assert (got.status_code, got.headers["location"]) == (303, "/login"), path
            got = client.post("/settings/acme", data={"csrf_token": "x", "bucket": "b"})
            assert (got.status_code, got.headers["location"]) == (303, "/login")
    assert server.stored() == (0, [])


def test_another_accounts_page_answers_as_a_missing_one(
    server: Server, s3_server: S3Server, s3_bucket: str
) -> None:
    globex = login(server, server.token("globex", name="Gina Globex"))
    assert save(globex, "globex", form(s3_bucket, s3_server, prefix="globex/")).status_code == 303
    before = server.stored()
    acme = login(server, server.token("acme", name="Mallory Acme"))
    csrf = csrf_of(acme.get("/settings/acme").text)
    data = {**form(s3_bucket, s3_server), "csrf_token": csrf, "version": "1"}
    for method, path in (
        ("GET", "/settings/{}"),
        ("POST", "/settings/{}"),
        ("POST", "/settings/{}/test-object"),
        ("POST", "/settings/{}/test-email"),
    ):
        payload = data if method == "POST" else None
        theirs = acme.request(method, path.format("globex"), data=payload)
        missing = acme.request(method, path.format("nobody-here"), data=payload)
        assert theirs.status_code == missing.status_code == 404, (method, path, theirs.text)
        assert theirs.content == missing.content
        assert "globex" not in theirs.text and "Gina" not in theirs.text
        assert theirs.headers.get("content-length") == missing.headers.get("content-length")
    assert server.stored() == before
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="globex/")
    assert not [o for o in listed.get("Contents", []) if "/test/" in o["Key"]]
    # The operator's token opens any account, through the chooser.
    operator = login(server, server.token(None, name="Olga Ops"))
    chooser = operator.get("/")
    assert chooser.status_code == 200 and 'for="account"' in chooser.text
    assert operator.get("/settings", params={"account": "globex"}).headers["location"] == (
        "/settings/globex"
    )
    assert "globex/" in operator.get("/settings/globex").text
    assert operator.get("/settings", params={"account": "../x"}).status_code == 400


def test_a_revoked_token_ends_its_session(server: Server) -> None:
    token = server.token("acme")
    client = login(server, token)
    assert client.get("/settings/acme").status_code == 200
    parsed = tokens.parse(token)
    assert parsed is not None
    assert server.cli("tokens", "revoke", parsed[0]).returncode == 0
    got = client.get("/settings/acme")
    assert (got.status_code, got.headers["location"]) == (303, "/login")
    assert "siem_session=null" in got.headers.get("set-cookie", "")  # the session is dropped
    assert client.get("/").headers["location"] == "/login"


def test_secrets_are_write_only_and_other_settings_are_kept(
    server: Server, s3_server: S3Server, s3_bucket: str
) -> None:
    key, secret = credentials(s3_server)
    # Saved first from the command line, with a setting the page does not show.
    document = {
        "name": "acme",
        "account": "acme",
        "format": "json",
        "compression": "none",
        "sink": {"type": "s3", "bucket": s3_bucket, "prefix": "cli/", "access_key_id": key,
                 "secret_access_key": secret},
        "notify": {"type": "email", "to": ["soc@acme.example"], "events": ["config"]},
    }  # fmt: skip
    (server.tmp / "acme.json").write_text(json.dumps(document))
    put = server.cli("integrations", "put", str(server.tmp / "acme.json"))
    assert put.returncode == 0, put.stderr
    token = server.token("acme")
    client = login(server, token)
    page = client.get("/settings/acme")
    assert page.status_code == 200
    for leak in (secret, key, token):
        assert leak not in page.text
    assert "<code>cli/acme/test/</code>" in page.text  # where the test object goes
    (secret_input,) = re.findall(r'<input[^>]*id="secret_access_key"[^>]*>', page.text)
    assert "value=" not in secret_input and 'type="password"' in secret_input
    assert 'autocomplete="off"' in secret_input
    assert "A secret is stored; leave empty to keep it" in page.text
    # Saved from the page with both keys left empty: kept, and still working.
    sealed = server.stored()[1][0].document["sink"]["secret_access_key"]
    kept = form(s3_bucket, s3_server, prefix="page/", format="syslog", access_key_id="")
    kept["secret_access_key"] = ""
    assert save(client, "acme", kept).status_code == 303
    (stored,) = server.stored()[1]
    assert stored.version == 2 and stored.document["compression"] == "none"
    assert stored.document["format"] == "syslog" and stored.document["sink"]["prefix"] == "page/"
    assert stored.document["sink"]["access_key_id"] == key
    assert stored.document["sink"]["secret_access_key"] == sealed
    page = client.get("/settings/acme")
    tested = client.post("/settings/acme/test-object", data={"csrf_token": csrf_of(page.text)})
    assert tested.status_code == 200 and "Test object written to" in tested.text
    # A refused save shows neither the typed secret nor the stored one.
    refused = save(client, "acme", form("no-such-bucket-here", s3_server))
    assert refused.status_code == 422 and "NoSuchBucket" in refused.text
    assert 'aria-describedby="sink-error"' in refused.text
    assert secret not in refused.text and key not in refused.text.replace(
        f'value="{key}"', ""
    )  # the access key id just typed stays in its field; nowhere else
    # Two administrators on one version: the second is told, not overwritten.
    page = client.get("/settings/acme")
    stale = {**form(s3_bucket, s3_server), "csrf_token": csrf_of(page.text), "version": "1"}
    conflict = client.post("/settings/acme", data=stale)
    assert conflict.status_code == 409
    assert "Someone saved these settings meanwhile; reload to see them." in conflict.text
    assert server.stored()[1][0].version == 2


def test_html_in_the_settings_is_shown_escaped(
    server: Server, s3_server: S3Server, s3_bucket: str
) -> None:
    client = login(server, server.token("acme"))
    attack = "<script>alert(1)</script>"
    got = save(
        client, "acme",
        form(s3_bucket, s3_server, prefix=f"a/{attack}/", recipients=f"{attack}@x.example"),
    )  # fmt: skip
    assert got.status_code == 422, got.text
    assert "<script" not in got.text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in got.text
    assert 'aria-invalid="true"' in got.text
    assert server.stored() == (0, [])
    # A name from a token (the administrator's), shown on every page: escaped too.
    named = login(server, server.token("acme", name="<b>Eve</b> Admin"))
    page = named.get("/settings/acme")
    assert "<b>Eve" not in page.text and "&lt;b&gt;Eve&lt;/b&gt; Admin" in page.text


def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(server: Server) -> None:
    """The session cookie is signed, not stored: a copy of it would outlive a sign-out
    unless the server remembers the sign-out. It does."""
    client = login(server, server.token("acme"))
    page = client.get("/settings/acme")
    assert page.status_code == 200
    copied = dict(client.cookies)
    got = client.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert (got.status_code, got.headers["location"]) == (303, "/login?signed_out=1")
    with server.client() as thief:
        thief.cookies.update(copied)
        got = thief.get("/settings/acme")
        assert (got.status_code, got.headers["location"]) == (303, "/login")
