"""The plugin host: built-ins, drop-in files, safe loading, duplicate names, the facade."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from siem_plugins.host import create_host
from siem_plugins.options import ConfigError, Options


def write(folder: Path, name: str, body: str, mode: int = 0o644) -> Path:
    """A drop-in file with an explicit mode (the umask of the machine must not matter)."""
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    path.chmod(mode)
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
    assert host.names("formatter") == ["cef", "ecs", "json", "leef", "ocsf", "syslog"]
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
    # The built-in keeps its name.
    assert host.names("formatter") == ["cef", "ecs", "json", "leef", "ocsf", "syslog"]
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


# --------------------------------------------------------------------------- safe loading

MARKER_PLUGIN = """
    import pathlib
    pathlib.Path(__file__).with_suffix(".ran").touch()
"""


def test_a_folder_writable_by_group_or_others_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = tmp_path / "hooks"
    marker = write(hooks, "good.py", GOOD + MARKER_PLUGIN).with_suffix(".ran")
    for mode in (0o777, 0o775, 0o757):
        hooks.chmod(mode)
        with caplog.at_level(logging.WARNING, logger="siem_plugins.host"):
            host = create_host(hooks, entry_points=False, disabled=())
        assert not marker.exists() and "mirror" not in host.names("sink")
        assert host.names("sink") == ["local", "s3"]  # the rest keeps working
        [failure] = host.failures
        assert (failure.name, failure.origin) == ("hooks/*.py", f"folder {hooks}")
        assert failure.error == (
            f"refusing to load drop-in plugins from {hooks}: the folder is writable by "
            f"group or others (mode {mode:04o}); run chmod go-w {hooks}"
        )
        assert failure.error in caplog.text
    hooks.chmod(0o755)
    assert "mirror" in create_host(hooks, entry_points=False, disabled=()).names("sink")
    assert marker.exists()


def test_a_file_writable_by_group_or_others_is_refused_the_rest_loads(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    write(hooks, "good.py", GOOD)
    bad = write(hooks, "loose.py", MARKER_PLUGIN, mode=0o664)
    host = create_host(hooks, entry_points=False, disabled=())
    assert "mirror" in host.names("sink") and "loose" not in host.plugins
    assert not bad.with_suffix(".ran").exists()
    [failure] = host.failures
    assert (failure.name, failure.origin) == ("loose", f"file {bad}")
    assert failure.error == (
        f"refusing to load {bad}: the file is writable by group or others (mode 0664); "
        f"run chmod go-w {bad}"
    )


def test_a_writable_parent_folder_is_refused_unless_it_is_sticky(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    hooks = parent / "hooks"
    parent.mkdir()
    parent.chmod(0o755)
    write(hooks, "good.py", GOOD)
    parent.chmod(0o777)  # anyone could rename hooks/ away and put their own in its place
    host = create_host(hooks, entry_points=False, disabled=())
    assert "mirror" not in host.names("sink")
    [failure] = host.failures
    assert failure.error == (
        f"refusing to load drop-in plugins from {hooks}: its parent folder {parent} is "
        f"writable by group or others (mode 0777); run chmod go-w {parent}"
    )
    parent.chmod(0o1777)  # as /tmp: nobody can rename what is not theirs
    host = create_host(hooks, entry_points=False, disabled=())
    assert host.failures == [] and "mirror" in host.names("sink")


def test_symlinks_are_followed_and_their_targets_checked(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    target = write(elsewhere, "real.py", GOOD)
    hooks = tmp_path / "hooks"
    hooks.mkdir(mode=0o755)
    hooks.chmod(0o755)
    (hooks / "linked.py").symlink_to(target)
    host = create_host(hooks, entry_points=False, disabled=())
    assert host.failures == [] and "mirror" in host.names("sink")  # a safe target loads

    target.chmod(0o666)
    host = create_host(hooks, entry_points=False, disabled=())
    [failure] = host.failures
    assert failure.error == (
        f"refusing to load {hooks / 'linked.py'}: its target {target} is writable by group "
        f"or others (mode 0666); run chmod go-w {target}"
    )
    target.chmod(0o644)
    elsewhere.chmod(0o777)
    [failure] = create_host(hooks, entry_points=False, disabled=()).failures
    assert failure.error.endswith(
        f"its parent folder {elsewhere} is writable by group or others (mode 0777); "
        f"run chmod go-w {elsewhere}"
    )
    # A linked folder: its target is what is checked.
    link = tmp_path / "hooks-link"
    link.symlink_to(elsewhere)
    [failure] = create_host(link, entry_points=False, disabled=()).failures
    assert failure.error == (
        f"refusing to load drop-in plugins from {link}: the folder (a link to {elsewhere}) "
        f"is writable by group or others (mode 0777); run chmod go-w {elsewhere}"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_files_and_folders_of_another_user_are_refused(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    theirs = write(hooks, "theirs.py", MARKER_PLUGIN)
    write(hooks, "good.py", GOOD)
    nobody = 65534
    os.chown(theirs, nobody, -1)
    host = create_host(hooks, entry_points=False, disabled=())
    assert "mirror" in host.names("sink") and not theirs.with_suffix(".ran").exists()
    [failure] = host.failures
    assert failure.name == "theirs"
    assert f"refusing to load {theirs}: the file is owned by " in failure.error
    assert f"uid {nobody}), not by this process's user (root (uid 0)) or root" in failure.error
    os.chown(theirs, 0, -1)
    os.chown(hooks, nobody, -1)
    [failure] = create_host(hooks, entry_points=False, disabled=()).failures
    assert failure.error.startswith(
        f"refusing to load drop-in plugins from {hooks}: the folder is owned by "
    )


def test_loaded_files_are_logged_and_no_bytecode_cache_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = tmp_path / "hooks"
    good = write(hooks, "good.py", GOOD)
    with caplog.at_level(logging.INFO, logger="siem_plugins.host"):
        create_host(hooks, entry_points=False, disabled=())
    assert f"loaded drop-in plugin 'good' from {good}" in caplog.text
    # A cached .pyc beside the file would be read instead of the checked source.
    assert not (hooks / "__pycache__").exists()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SIEM_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "siem_plugins", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_drop_in_folder_is_beside_the_config_never_the_working_directory(
    tmp_path: Path,
) -> None:
    # The working directory holds a hooks/ folder that must never run by itself.
    cwd = tmp_path / "somewhere"
    cwd.mkdir(mode=0o755)
    cwd.chmod(0o755)  # whatever the umask: a group-writable parent would be refused
    stray = write(cwd / "hooks", "stray.py", MARKER_PLUGIN).with_suffix(".ran")
    conf = tmp_path / "etc"
    conf.mkdir()
    conf.chmod(0o755)
    write(conf / "hooks", "good.py", GOOD)
    (conf / "siem.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')

    def names(proc: subprocess.CompletedProcess[str]) -> set[str]:
        assert proc.returncode == 0, proc.stderr
        return {p["name"] for p in json.loads(proc.stdout)["plugins"]}

    listed = names(cli("plugins", "--json", "-c", str(conf / "siem.toml"), cwd=cwd))
    assert "good" in listed and "stray" not in listed
    # No config file, no --plugins-dir: no drop-in folder at all (and it says so at -v).
    proc = cli("plugins", "--json", "-v", cwd=cwd)
    assert "good" not in names(proc) and "stray" not in names(proc)
    assert "no config file and no --plugins-dir: no drop-in plugins loaded" in proc.stderr
    # The demo loads none either.
    demo = cli("demo", "--dir", str(tmp_path / "demo"), "--events", "20", cwd=cwd)
    assert demo.returncode == 0, demo.stderr
    assert not stray.exists()
    # The command line may still name the folder (relative to the working directory).
    assert "stray" in names(cli("plugins", "--json", "--plugins-dir", "hooks", cwd=cwd))
    assert stray.exists()


def test_the_plugins_command_shows_a_refused_folder(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    write(hooks, "good.py", GOOD)
    hooks.chmod(0o777)
    (tmp_path / "siem.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    proc = cli("plugins", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the refused folder is a load failure
    assert json.loads(proc.stdout)["failures"] == [
        {
            "name": "hooks/*.py",
            "origin": "folder hooks",
            "error": f"refusing to load drop-in plugins from {hooks}: the folder is writable "
            f"by group or others (mode 0777); run chmod go-w {hooks}",
        }
    ]
    table = cli("plugins", cwd=tmp_path)
    shown = " ".join(table.stdout.split())  # the table wraps long lines
    assert f"refusing to load drop-in plugins from {hooks}: the folder is" in shown
    assert f"run chmod go-w {hooks}" in table.stderr  # the log says it too


def test_a_missing_folder_is_named_at_debug_and_a_missing_plugins_dir_warns(
    tmp_path: Path,
) -> None:
    (tmp_path / "siem.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')
    proc = cli("plugins", "--json", "-v", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "drop-in folder hooks does not exist: no drop-in plugins loaded" in proc.stderr
    proc = cli("plugins", "--json", "--plugins-dir", "nope", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr
    assert "--plugins-dir nope is not a folder: no drop-in plugins loaded" in proc.stderr


def test_a_disabled_plugin_is_listed_and_named_where_its_component_is_missing(
    tmp_path: Path,
) -> None:
    host = create_host(None, entry_points=False, disabled={"jsonfmt"})
    assert [(d.name, d.origin) for d in host.skipped] == [("jsonfmt", "built-in")]
    with pytest.raises(ConfigError) as info:
        host.formatter("json", Options({}, path="integration[0].format"))
    assert (
        "unknown formatter 'json'; available: cef, ecs, leef, ocsf, syslog; plugins disabled by "
        "SIEM_DISABLED_PLUGINS: jsonfmt (built-in)"
    ) in str(info.value)
    env = {**os.environ, "SIEM_DISABLED_PLUGINS": "jsonfmt"}
    proc = subprocess.run(
        [sys.executable, "-m", "siem_plugins", "plugins", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # disabled on purpose: not a failure
    listing = json.loads(proc.stdout)
    assert listing["disabled"] == [{"name": "jsonfmt", "origin": "built-in"}]
    assert "jsonfmt" not in {p["name"] for p in listing["plugins"]}
    descriptions = {
        (c["kind"], c["name"]): c["description"] for p in listing["plugins"] for c in p["provides"]
    }
    assert descriptions[("sink", "s3")].startswith("objects in an S3 bucket")


def test_a_component_that_breaks_its_contract_is_named_with_what_it_lacks() -> None:
    from siem_plugins import SinkSpec, hookimpl

    class HalfASink:  # no identity(), no stream: written before the contract said so
        def describe(self) -> str:
            return "somewhere"

        def open(self, key: str, meta: object) -> object:
            raise NotImplementedError

        def probe(self) -> None: ...

        def close(self) -> None: ...

    class Plugin:
        @hookimpl
        def siem_register_sinks(self) -> list[SinkSpec]:
            return [SinkSpec("half", lambda options: HalfASink())]  # type: ignore[arg-type,return-value]

    host = create_host(None, entry_points=False, disabled=(), extra=[("half", Plugin())])
    with pytest.raises(
        ConfigError,
        match=r"integration\[0\]\.sink\.type: sink plugin 'half' "
        r"built a HalfASink, which is not a Sink \(it lacks: identity, stream\)",
    ):
        host.sink("half", Options({}, path="integration[0].sink"))
