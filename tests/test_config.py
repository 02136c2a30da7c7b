"""siem.toml: located errors, ${ENV} secrets, redaction."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from siem_plugins.config import load_config, redact
from siem_plugins.host import create_host
from siem_plugins.logs import RedactingFilter
from siem_plugins.options import ConfigError, Options, Secret, is_secret_key
from siem_plugins.runtime import Runtime

BASE = """
interval = "5m"
[store]
url = "sqlite:///{db}"
[smtp]
host = "127.0.0.1"
port = 2525
security = "none"
from = "siem@example.com"
[[integration]]
name = "acme"
format = "json"
[integration.sink]
type = "local"
path = "{out}"
[integration.notify]
events = ["exempt_all"]
to = ["admin@example.com"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "siem.toml"
    path.write_text(
        textwrap.dedent(text)
        .replace("{db}", str(tmp_path / "s.db"))
        .replace("{out}", str(tmp_path / "out"))
    )
    return path


def build(path: Path) -> Runtime:
    cfg = load_config(path, environ={"SMTP_PASSWORD": "hunter2-secret"})
    return Runtime(cfg, create_host(None, entry_points=False, disabled=()))


def build_with(path: Path, environ: dict[str, str]) -> None:
    cfg = load_config(path, environ=environ)
    Runtime(cfg, create_host(None, entry_points=False, disabled=())).close()


def test_base_config_is_valid(tmp_path: Path) -> None:
    rt = build(write(tmp_path, BASE))
    assert rt.config.interval == 300
    [integ] = rt.integrations
    assert (integ.name, integ.config.account, integ.config.notify_events) == (
        "acme",
        "acme",
        frozenset({"exempt_all"}),
    )
    rt.close()


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        (
            'format = "json"',
            'format = "xml"',
            "integration[0].format.type",
            "unknown formatter 'xml'; available: cef, ecs, json, leef, ocsf, syslog",
        ),
        (
            'type = "local"',
            'type = "ftp"',
            "integration[0].sink.type",
            "unknown sink 'ftp'; available: local, s3",
        ),
        (
            "[integration.notify]",
            '[integration.notify]\ntype = "pager"',
            "integration[0].notify.type",
            "unknown notifier 'pager'; available: email, outbox",
        ),
        (
            'type = "local"\npath',
            'type = "s3"\nregion = "eu-west-1"\nxpath',
            "integration[0].sink.bucket",
            "missing required setting",
        ),
        (
            'events = ["exempt_all"]',
            "events = []",
            "integration[0].notify.events",
            "select at least one event type",
        ),
        (
            'events = ["exempt_all"]',
            'events = ["exempt_al"]',
            "integration[0].notify.events[0]",
            "unknown log type 'exempt_al'; known: ",
        ),
        ('interval = "5m"', 'interval = "soon"', "interval", "expected a duration"),
        ('interval = "5m"', "interval = 0", "interval", "at least 1 second"),
        (
            'name = "acme"',
            'name = "acme"\nformt = "json"',
            "integration[0].formt",
            "unknown setting 'formt'",
        ),
        (
            "[smtp]",
            "[smpt]\nx = 1\n[smtp]",
            "smpt",
            "unknown section [smpt]; known sections: celery, integration, metrics, retention, s3, smtp, store",
        ),
        (
            "port = 2525",
            "port = 2525\nprot = 25",
            "smtp.prot",
            "unknown setting 'prot' (the components using [smtp] read: ",
        ),
        (
            "[integration.notify]",
            '[integration.notify]\ntype = "outbox"\npath = "o"\nfrom = "not an address"',
            "integration[0].notify.from",
            "not an address",
        ),
        ("port = 2525", 'port = "twenty"', "smtp.port", "expected an integer"),
        (
            'to = ["admin@example.com"]',
            'to = ["not an address"]',
            "integration[0].notify.to",
            "item 0",
        ),
        ('interval = "5m"', 'interval = "5m"\nmax_workers = 0', "max_workers", "at least 1"),
    ],
)
def test_errors_name_the_file_and_key(
    tmp_path: Path, old: str, new: str, where: str, message: str
) -> None:
    text = textwrap.dedent(BASE)
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        build(path)
    assert str(info.value).startswith(f"{path}: {where}: "), str(info.value)
    assert message in str(info.value)


def test_missing_notify_and_invalid_toml(tmp_path: Path) -> None:
    text = textwrap.dedent(BASE)
    path = write(tmp_path, text[: text.index("[integration.notify]")])
    with pytest.raises(ConfigError, match=r"integration\[0\]\.notify: missing required table"):
        build(path)
    path.write_text("interval = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        build(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        build(tmp_path / "nope.toml")


def test_env_interpolation_and_redaction(tmp_path: Path) -> None:
    text = textwrap.dedent(BASE).replace(
        'security = "none"',
        'security = "starttls"\nusername = "siem"\n'
        'password = "${SMTP_PASSWORD}"\nsubject_prefix = "${PREFIX:-[SIEM]}"',
    )
    path = write(tmp_path, text)
    cfg = load_config(path, environ={"SMTP_PASSWORD": "hunter2-secret"})
    assert cfg.data["smtp"]["password"].reveal() == "hunter2-secret"
    assert cfg.data["smtp"]["subject_prefix"] == "[SIEM]"
    printed = json.dumps(cfg.redacted())
    assert "hunter2" not in printed and '"password": "***"' in printed
    assert "hunter2" not in repr(cfg.data)
    with pytest.raises(
        ConfigError,
        match=r"smtp\.password: environment variable SMTP_PASSWORD "
        r"is not set",
    ):
        load_config(path, environ={})


def test_cli_check_reports_config_errors_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, textwrap.dedent(BASE).replace('format = "json"', 'format = "xml"'))
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"config error: {path}: integration[0].format.type: unknown formatter 'xml'" in (
        proc.stderr
    )


def test_cli_check_prints_redacted_config(tmp_path: Path) -> None:
    text = textwrap.dedent(BASE).replace(
        'security = "none"',
        'security = "starttls"\nusername = "siem"\npassword = "${SMTP_PASSWORD}"',
    )
    path = write(tmp_path, text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "siem_plugins",
            "check",
            "--no-probe",
            "--print-config",
            "-v",
            "-c",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SMTP_PASSWORD": "hunter2-secret", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert '"password": "***"' in proc.stdout
    assert "hunter2" not in proc.stdout + proc.stderr


def test_passwords_inside_urls_are_redacted_in_printed_config_and_logs(
    tmp_path: Path, pg_url: str
) -> None:
    # The migrated schema of pg_url, reached with a password in the URL (the local server
    # trusts loopback, so any password connects); and a broker URL with one.
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    store = pg_url.replace(f"{parts.username}@", f"{parts.username}:Url-Secret-Pw-42@", 1)
    text = (
        textwrap.dedent(BASE).replace('url = "sqlite:///{db}"', f'url = "{store}"')
        + '[celery]\nbroker_url = "redis://:Broker-Secret-99@127.0.0.1:6379/0"\n'
    )
    path = write(tmp_path, text)
    args = ["check", "--no-probe", "--print-config", "-vv", "-c", str(path)]
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    assert printed["store"]["url"].startswith(f"postgresql://{parts.username}:***@")
    assert printed["celery"]["broker_url"] == "redis://:***@127.0.0.1:6379/0"
    assert "Url-Secret" not in proc.stdout + proc.stderr
    assert "Broker-Secret" not in proc.stdout + proc.stderr


def test_check_says_ok_only_after_every_plugin_setting_is_valid(tmp_path: Path) -> None:
    # A setting only the sink plugin knows is wrong: found when the sink is built.
    path = write(tmp_path, BASE.replace('path = "{out}"', 'path = "{out}"\ncompres = "gzip"'))
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "check", "--no-probe", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ok" not in proc.stdout
    assert "integration[0].sink.compres: unknown setting 'compres'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ('interval = "5m"', "interval = nan", "interval", "must be a finite duration"),
        ('interval = "5m"', "interval = inf", "interval", "must be a finite duration"),
        ('interval = "5m"', "interval = -inf", "interval", "must be a finite duration"),
        ('interval = "5m"', "interval = 1e400", "interval", "must be a finite duration"),
        ('interval = "5m"', "interval = 86401", "interval", "must be at most 1 day"),
        ('interval = "5m"', 'interval = "25h"', "interval", "must be at most 1 day"),
        ('interval = "5m"', "interval = 1" + "0" * 400, "interval", "must be at most 1 day"),
        ("port = 2525", "port = 2525\ntimeout = nan", "smtp.timeout", "must be a finite number"),
        ("port = 2525", "port = 2525\ntimeout = inf", "smtp.timeout", "must be a finite number"),
        ("port = 2525", "port = 2525\ntimeout = 601", "smtp.timeout", "must be at most 600"),
        (
            "port = 2525",
            "port = 2525\ntimeout = 1" + "0" * 400,
            "smtp.timeout",
            "must be at most 600",
        ),
        (
            'name = "acme"',
            'name = "acme"\nmax_events = 1000000000000',
            "integration[0].max_events",
            "must be at most 100000000",
        ),
        (
            'name = "acme"',
            'name = "acme"\nmax_bytes = "65 GiB"',
            "integration[0].max_bytes",
            "must be at most 64 GiB",
        ),
        (
            'type = "local"\npath = "{out}"',
            'type = "s3"\nbucket = "bkt"\nread_timeout = nan',
            "integration[0].sink.read_timeout",
            "must be a finite number",
        ),
        (
            'type = "local"\npath = "{out}"',
            'type = "s3"\nbucket = "bkt"\nconnect_timeout = 1e9',
            "integration[0].sink.connect_timeout",
            "must be at most 600",
        ),
        (
            "[integration.notify]",
            '[integration.notify]\ntype = "outbox"\npath = "o"\nfrom = "s@example.com"\n'
            "max_listed = 10001",
            "integration[0].notify.max_listed",
            "must be at most 10000",
        ),
    ],
)
def test_non_finite_and_absurd_numbers_are_rejected(
    tmp_path: Path, old: str, new: str, where: str, message: str
) -> None:
    text = textwrap.dedent(BASE)
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        build(path)
    assert str(info.value).startswith(f"{path}: {where}: "), str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_options_number_rejects_non_finite_values_whatever_the_bounds(value: float) -> None:
    opts = Options({"x": value}, path="t", file="f.toml")
    with pytest.raises(ConfigError, match=r"^f\.toml: t\.x: must be a finite number"):
        opts.number("x")
    with pytest.raises(ConfigError, match="must be a finite number"):
        opts.number("x", min=0, max=10)


def test_run_interval_on_the_command_line_is_bounded_too(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    for bad in ("nan", "1e400", "2000h"):
        proc = subprocess.run(
            [sys.executable, "-m", "siem_plugins", "run", "-c", str(path), "--interval", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "config error: --interval: " in proc.stderr


# --------------------------------------------------------------------------- secrets


def test_a_secret_that_is_not_a_string_is_never_shown(tmp_path: Path) -> None:
    number = "73914528861"
    text = textwrap.dedent(BASE).replace(
        'security = "none"', f'security = "starttls"\nusername = "siem"\npassword = {number}'
    )
    path = write(tmp_path, text)
    cfg = load_config(path, environ={})
    assert number in cfg.secrets  # the log redactor gets its text
    assert json.loads(json.dumps(cfg.redacted()))["smtp"]["password"] == "***"
    with pytest.raises(ConfigError) as info:
        build(path)
    assert str(info.value) == f"{path}: smtp.password: expected a string, got a number"
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "check", "--print-config", "-vv", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert '"password": "***"' in proc.stdout
    assert number not in proc.stdout + proc.stderr


def test_redact_goes_by_key_whatever_the_type() -> None:
    data = {
        "password": 1234567,
        "api_token": [12345, "abcdef"],
        "apiKey": 1.5,
        "x": {"client-secret": True, "port": 25, "passphrase": "words"},
    }
    assert redact(data) == {
        "password": "***",
        "api_token": ["***", "***"],
        "apiKey": "***",
        "x": {"client-secret": "***", "port": 25, "passphrase": "***"},
    }


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "smtp_password",
        "Passwd",
        "passphrase",
        "secret_access_key",
        "session_token",
        "api_key",
        "apiKey",
        "api-key",
        "x_api_key",
        "session_key",
        "private_key",
        "credentials",
        "Authorization",
    ],
)
def test_secret_key_names(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["access_key_id", "username", "host", "port", "key", "path"])
def test_not_secret_key_names(key: str) -> None:
    assert not is_secret_key(key)


def test_the_log_redactor_takes_numbers_as_their_text(caplog: pytest.LogCaptureFixture) -> None:
    redactor = RedactingFilter()
    redactor.add([73914528861, Secret("s3cr3t-value")])
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "auth with %s and %s", (73914528861, "s3cr3t-value"), None
    )
    redactor.filter(record)
    assert record.getMessage() == "auth with *** and ***"


# --------------------------------------------------------------------------- ${ENV} values


def test_numbers_and_booleans_from_the_environment_are_converted(tmp_path: Path) -> None:
    text = (
        textwrap.dedent(BASE)
        .replace("port = 2525", 'port = "${SMTP_PORT}"\ntimeout = "${SMTP_TIMEOUT}"')
        .replace('name = "acme"', 'name = "acme"\nenabled = "${ENABLED}"\nmax_events = "${MAX}"')
        .replace('interval = "5m"', 'interval = "${INTERVAL}"')
    )
    path = write(tmp_path, text)
    environ = {
        "SMTP_PORT": "2526",
        "SMTP_TIMEOUT": "2.5",
        "ENABLED": "No",
        "MAX": " 500 ",
        "INTERVAL": "90s",
    }
    cfg = load_config(path, environ=environ)
    rt = Runtime(cfg, create_host(None, entry_points=False, disabled=()))
    try:
        [integ] = rt.integrations
        notifier: Any = integ.notifier
        assert (notifier.settings.port, notifier.settings.timeout) == (2526, 2.5)
        assert integ.config.enabled is False
        assert integ.config.max_events == 500
        assert cfg.interval == 90
    finally:
        rt.close()
    for spelling, expected in (("TRUE", True), ("yes", True), ("1", True), ("0", False)):
        cfg = load_config(path, environ={**environ, "ENABLED": spelling})
        assert cfg.integrations[0].enabled is expected


@pytest.mark.parametrize(
    ("variable", "value", "where", "message"),
    [
        (
            "SMTP_PORT",
            "abc",
            "smtp.port",
            "expected an integer, got a string 'abc' from ${SMTP_PORT}",
        ),
        (
            "SMTP_PORT",
            "25.5",
            "smtp.port",
            "expected an integer, got a string '25.5' from ${SMTP_PORT}",
        ),
        ("SMTP_PORT", "70000", "smtp.port", "must be at most 65535"),
        (
            "SMTP_TIMEOUT",
            "nan",
            "smtp.timeout",
            "expected a number, got a string 'nan' from ${SMTP_TIMEOUT}",
        ),
        ("SMTP_TIMEOUT", "1e400", "smtp.timeout", "must be a finite number"),
        (
            "ENABLED",
            "maybe",
            "integration[0].enabled",
            "expected true or false, got a string 'maybe' from ${ENABLED}",
        ),
        ("INTERVAL", "soon", "interval", "got a string 'soon' from ${INTERVAL}"),
    ],
)
def test_bad_values_from_the_environment_name_the_variable(
    tmp_path: Path, variable: str, value: str, where: str, message: str
) -> None:
    text = (
        textwrap.dedent(BASE)
        .replace("port = 2525", 'port = "${SMTP_PORT}"\ntimeout = "${SMTP_TIMEOUT}"')
        .replace('name = "acme"', 'name = "acme"\nenabled = "${ENABLED}"')
        .replace('interval = "5m"', 'interval = "${INTERVAL}"')
    )
    path = write(tmp_path, text)
    environ = {"SMTP_PORT": "25", "SMTP_TIMEOUT": "5", "ENABLED": "true", "INTERVAL": "5m"}
    with pytest.raises(ConfigError) as info:
        build_with(path, {**environ, variable: value})
    assert str(info.value).startswith(f"{path}: {where}: "), str(info.value)
    assert message in str(info.value)


def test_plain_strings_for_numbers_stay_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, textwrap.dedent(BASE).replace("port = 2525", 'port = "2525"'))
    with pytest.raises(ConfigError) as info:
        build(path)
    assert str(info.value) == (
        f"{path}: smtp.port: expected an integer, got a string '2525' (write it without quotes)"
    )


def test_a_secret_from_the_environment_stays_a_secret(tmp_path: Path) -> None:
    from siem_plugins.options import FromEnv

    text = textwrap.dedent(BASE).replace(
        'security = "none"',
        'security = "starttls"\nusername = "siem"\npassword = "${SMTP_PASSWORD}"\n'
        'api_token = "${SMTP_PASSWORD}"',
    )
    cfg = load_config(write(tmp_path, text), environ={"SMTP_PASSWORD": "hunter2-secret"})
    for key in ("password", "api_token"):
        value = cfg.data["smtp"][key]
        assert isinstance(value, Secret) and isinstance(value, FromEnv)
        assert repr(value) == "Secret('***')" and value.reveal() == "hunter2-secret"
        opts = Options(cfg.data["smtp"], path="smtp")
        assert isinstance(opts.string(key), Secret) and isinstance(opts.secret(key), Secret)
    # A secret under a numeric reader: the error names the variable, never the value.
    opts = Options(cfg.data["smtp"], path="smtp")
    with pytest.raises(ConfigError) as info:
        opts.integer("password")
    assert (
        str(info.value) == "smtp.password: expected an integer, got a string from ${SMTP_PASSWORD}"
    )


# --------------------------------------------------------------------------- typos


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        (
            'type = "local"\npath = "{out}"',
            'type = "s3"\nbucekt = "x"',
            "integration[0].sink.bucket",
            "missing required setting (a string); found 'bucekt': did you mean 'bucket'?",
        ),
        (
            "[integration.notify]",
            "[integration.notfiy]",
            "integration[0].notify",
            "missing required table [integration.notify]; found [integration.notfiy]: "
            "did you mean [integration.notify]?",
        ),
        (
            "[integration.sink]",
            "[integration.snik]",
            "integration[0].sink",
            "found [integration.snik]: did you mean [integration.sink]?",
        ),
        (
            'format = "json"',
            'formt = "json"',
            "integration[0].format",
            "found 'formt': did you mean 'format'?",
        ),
        (
            'path = "{out}"',
            'path = "{out}"\nmax_events = 5',
            "integration[0].sink.max_events",
            "unknown setting 'max_events': it is a key of [[integration]], so move it above "
            "[integration.sink]: in TOML every key after a table header belongs to that table",
        ),
        (
            'to = ["admin@example.com"]',
            'to = ["admin@example.com"]\ncompression = "none"',
            "integration[0].notify.compression",
            "move it above [integration.notify]",
        ),
        (
            'url = "sqlite:///{db}"',
            'url = "sqlite:///{db}"\nmax_workers = 2',
            "store.max_workers",
            "unknown setting 'max_workers': it is a top-level key, so move it above [store]",
        ),
        (
            'name = "acme"',
            'name = "acme"\nintervall = 5',
            "integration[0].intervall",
            "unknown setting 'intervall' (did you mean 'interval'? it is a top-level key, so "
            "move it above [[integration]]: in TOML every key after a table header belongs to "
            "that table)",
        ),
        (
            'path = "{out}"',
            'path = "{out}"\npreffix = "x/"',
            "integration[0].sink.preffix",
            "unknown setting 'preffix' (did you mean 'prefix'?)",
        ),
        ("[smtp]", "[smpt]\nx = 1\n[smtp]", "smpt", "(did you mean [smtp]?)"),
        (
            'interval = "5m"',
            'interval = "5m"\nmax_worker = 2',
            "max_worker",
            "did you mean 'max_workers'?",
        ),
    ],
)
def test_typos_get_a_suggestion(
    tmp_path: Path, old: str, new: str, where: str, message: str
) -> None:
    text = textwrap.dedent(BASE)
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        build(path)
    assert str(info.value).startswith(f"{path}: {where}: "), str(info.value)
    assert message in str(info.value)


def test_no_suggestion_without_a_close_name(tmp_path: Path) -> None:
    text = textwrap.dedent(BASE).replace('path = "{out}"', 'path = "{out}"\nzzz = 1')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        build(path)
    assert str(info.value) == f"{path}: integration[0].sink.zzz: unknown setting 'zzz'"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '[celery]\nbrokr_url = "redis://127.0.0.1:6379/0"\n',
            "celery.brokr_url: unknown setting 'brokr_url'",
        ),
        (
            '[celery]\nbroker_url = "http://127.0.0.1:6379/0"\n',
            "celery.broker_url: expected a broker URL such as redis://",
        ),
        ('[celery]\nqueue = "no spaces"\n', "celery.queue: invalid queue name 'no spaces'"),
        ("[celery]\nbroker_url = 6379\n", "celery.broker_url: expected a string"),
    ],
    ids=["typo", "scheme", "queue", "type"],
)
def test_the_celery_table_is_checked_like_any_other(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(write(tmp_path, BASE + table))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[metrics]\nprot = 9464\n", "metrics.prot: unknown setting 'prot' (did you mean 'port'?)"),
        ("[metrics]\nport = 70000\n", "metrics.port: must be at most 65535"),
        ("[metrics]\nport = -1\n", "metrics.port: must be at least 0"),
        ('[metrics]\nport = "9464"\n', "metrics.port: expected an integer"),
        (
            '[metrics]\nport = 9464\naddress = "not a host"\n',
            "metrics.address: expected an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name",
        ),
        ('[metrics]\naddress = "0.0.0.0"\n', "metrics: [metrics] needs port (for `run`)"),
        (
            "[metrics]\nport = 9464\nworker_port = 9464\n",
            "metrics.worker_port: `run` and `worker` cannot both listen on port 9464",
        ),
    ],
    ids=["typo", "high", "negative", "type", "address", "no-port", "same-port"],
)
def test_the_metrics_table_is_checked_like_any_other(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE + table))
    assert message in str(info.value)


def test_the_metrics_table(tmp_path: Path) -> None:
    plain = load_config(write(tmp_path, BASE))
    assert (plain.metrics.port, plain.metrics.worker_port) == (None, None)
    cfg = load_config(
        write(tmp_path, BASE + '[metrics]\nport = 9464\nworker_port = 0\naddress = "::"\n')
    )
    assert (cfg.metrics.port, cfg.metrics.worker_port, cfg.metrics.address) == (9464, 0, "::")
    off = load_config(write(tmp_path, BASE + "[metrics]\nenabled = false\nport = 9464\n"))
    assert (off.metrics.port, off.metrics.worker_port) == (None, None)
    named = load_config(
        write(tmp_path, BASE + '[metrics]\nport = 1\naddress = "metrics.internal"\n')
    )
    assert named.metrics.address == "metrics.internal"


def test_the_celery_table_is_parsed_in_the_config_layer(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, BASE + '[celery]\nbroker_url = "amqp://guest@127.0.0.1//"\nqueue = "q1"\n')
    )
    assert (cfg.celery.broker_url, cfg.celery.queue) == ("amqp://guest@127.0.0.1//", "q1")
    plain = load_config(write(tmp_path, BASE))
    assert (plain.celery.broker_url, plain.celery.queue) == (None, "siem")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"beginning"', None),
        ('"now"', "now"),
        ("2026-11-01", "2026-11-01T00:00:00.000Z"),
        ("2026-11-01T10:00:00+02:00", "2026-11-01T08:00:00.000Z"),
        ('"2026-11-01T10:00:00Z"', "2026-11-01T10:00:00.000Z"),
    ],
)
def test_start_at_takes_now_a_date_or_a_time_with_a_zone(
    tmp_path: Path, value: str, expected: str | None
) -> None:
    text = BASE.replace('format = "json"', f'format = "json"\nstart_at = {value}')
    assert load_config(write(tmp_path, text)).integrations[0].start_at == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-01T10:00:00", "has no time zone"),
        ('"yesterday"', "is not a date"),
        ("5", "expected a date or a date-time, got int"),
    ],
)
def test_a_bad_start_at_is_located(tmp_path: Path, value: str, message: str) -> None:
    text = BASE.replace('format = "json"', f'format = "json"\nstart_at = {value}')
    with pytest.raises(ConfigError, match=rf"integration\[0\]\.start_at: .*{message}"):
        load_config(write(tmp_path, text))
