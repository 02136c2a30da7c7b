"""The plugin host: built-ins, drop-in files, safe loading, duplicate names, the facade."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from siem_plugins.host import create_host
from siem_plugins.options import ConfigError, Options


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """
    from siem_plugins import SinkSpec, hookimpl
    from siem_plugins.builtin.local import LocalSink

    @hookimpl
    def siem_register_sinks():
        return [SinkSpec(name="mirror", factory=LocalSink.from_options, description="x")]
"""


def test_builtins_are_plugins_like_any_other() -> None:
    host = create_host(None, entry_points=False, disabled=())
    assert host.failures == []
    assert host.names("source") == ["store"]
    assert host.names("formatter") == ["json", "syslog"]
    assert host.names("sink") == ["local", "s3"]
    assert host.names("notifier") == ["email", "outbox"]
    assert {p.origin for p in host.plugins.values()} == {"built-in"}
    assert host.plugins["syslog"].hooks == ["siem_register_formatters"]
    assert host.section_of("notifier", "email") == "smtp"


def test_drop_in_folder_and_bad_plugins_are_skipped_not_fatal(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    write(hooks, "good.py", GOOD)
    write(hooks, "broken.py", "import does_not_exist_anywhere\n")
    write(
        hooks,
        "typo.py",
        """
        from siem_plugins import hookimpl
        @hookimpl
        def siem_register_sink():
            return []
    """,
    )
    write(
        hooks,
        "dupe.py",
        """
        from siem_plugins import FormatterSpec, hookimpl
        from siem_plugins.builtin.jsonfmt import JSONFormatter
        @hookimpl
        def siem_register_formatters():
            return [FormatterSpec(name="json", factory=JSONFormatter.from_options)]
    """,
    )
    write(
        hooks,
        "wrongtype.py",
        """
        from siem_plugins import hookimpl
        @hookimpl
        def siem_register_notifiers():
            return ["not a descriptor"]
    """,
    )
    write(hooks, "_private.py", "raise SystemExit('never imported')\n")
    host = create_host(hooks, entry_points=False, disabled=())
    assert "mirror" in host.names("sink")
    assert host.plugins["good"].origin == f"file {hooks / 'good.py'}"
    failures = {f.name: f.error for f in host.failures}
    assert set(failures) == {"broken", "typo", "dupe", "wrongtype"}
    assert "ModuleNotFoundError" in failures["broken"]
    assert "unknown hook(s) siem_register_sink" in failures["typo"]
    assert (
        "formatter name 'json' is already registered by plugin 'jsonfmt' (built-in)"
        in (failures["dupe"])
    )
    assert "report this to the authors of 'dupe'" in failures["dupe"]
    assert "expected NotifierSpec" in failures["wrongtype"]
    assert host.names("formatter") == ["json", "syslog"]  # the built-in keeps its name
    # A config naming something unavailable hears about the failures too.
    with pytest.raises(ConfigError) as info:
        host.spec("sink", "splunk", where=Options({}, path="integration[0].sink", file="s.toml"))
    message = str(info.value)
    assert message.startswith(
        "s.toml: integration[0].sink.type: unknown sink 'splunk'; available: local, mirror, s3"
    )
    assert "plugin 'broken'" in message


def test_disabled_plugins_are_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = tmp_path / "hooks"
    marker = tmp_path / "imported"
    write(hooks, "noisy.py", f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.setenv("SIEM_DISABLED_PLUGINS", "noisy, s3")
    host = create_host(hooks, entry_points=False)
    assert not marker.exists()
    assert "noisy" not in host.plugins and "s3" not in host.names("sink")
    monkeypatch.delenv("SIEM_DISABLED_PLUGINS")
    create_host(hooks, entry_points=False)
    assert marker.exists()


def test_trace_logs_hook_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIEM_TRACE_PLUGINS", "1")
    host = create_host(None, entry_points=False, disabled=())
    with caplog.at_level(logging.INFO, logger="siem_plugins.host"):
        host.hooks.sync_failed(integration="acme", destination="sink", error=RuntimeError("x"))
    assert any("siem_sync_failed" in r.getMessage() for r in caplog.records)


def test_an_observer_that_raises_does_not_break_the_sync(caplog: pytest.LogCaptureFixture) -> None:
    from siem_plugins import hookimpl

    class Bad:
        @hookimpl
        def siem_sync_failed(
            self, integration: str, destination: str, error: BaseException
        ) -> None:
            raise ValueError("observer bug")

    host = create_host(None, entry_points=False, disabled=(), extra=[("bad", Bad())])
    host.hooks.sync_failed(integration="acme", destination="sink", error=RuntimeError("x"))
    assert "siem_sync_failed hook failed" in caplog.text


def test_every_hook_is_documented_in_the_hook_reference() -> None:
    from siem_plugins import hookspecs

    doc = (Path(__file__).parents[1] / "docs" / "hooks.md").read_text()
    names = [n for n in dir(hookspecs) if n.startswith("siem_")]
    assert len(names) == 8
    for name in names:
        assert f"## `{name}`" in doc, f"{name} is not documented in docs/hooks.md"
        assert getattr(hookspecs, name).__doc__, name
