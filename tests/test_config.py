"""siem.toml: located errors, ${ENV} secrets, redaction."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from siem_plugins.config import load_config
from siem_plugins.host import create_host
from siem_plugins.options import ConfigError
from siem_plugins.pipeline import Runtime

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
            "unknown formatter 'xml'; available: json, syslog",
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
            "unknown section [smpt]; known sections: celery, integration, s3, smtp, store",
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
