"""The plugin host: one pluggy manager, three places plugins come from, typed registries.

Load order (documented in docs/plugins.md):

1. built-ins, from the explicit list :data:`siem_plugins.builtin.BUILTINS`;
2. installed packages, entry-point group ``siem_plugins``;
3. ``*.py`` files in the drop-in folder, in name order. The caller names the folder
   (the command line resolves it from the config file, never the working directory).

Drop-in files are code run with the shipper's rights, so like ssh with its keys the host
refuses a folder or file that someone else could have written: owned by another user
than the process's or root, or writable by group or others (also through a parent
folder, unless that parent has the sticky bit, as ``/tmp``). Symlinks are followed and
their targets checked. A refused folder or file is a load failure like any other.

Every plugin goes through :meth:`PluginHost.register`. A plugin that fails to import,
implements an unknown hook or registers a name already taken is reported (name,
origin, error) and skipped; the rest keep working. Plugins named in
``SIEM_DISABLED_PLUGINS`` (comma separated) are never imported.

There is no global manager: :func:`create_host` builds one and callers pass it on.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pluggy

from siem_plugins import PROJECT_NAME, hookspecs
from siem_plugins.kinds import (
    KIND_OF,
    Digest,
    Formatter,
    FormatterSpec,
    Intent,
    Notifier,
    NotifierSpec,
    ObjectReceipt,
    Sink,
    SinkSpec,
    Source,
    SourceSpec,
    Spec,
)
from siem_plugins.options import Options

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME
DISABLED_ENV = "SIEM_DISABLED_PLUGINS"
TRACE_ENV = "SIEM_TRACE_PLUGINS"

_REGISTRATION_HOOKS: dict[str, str] = {
    "source": "siem_register_sources",
    "formatter": "siem_register_formatters",
    "sink": "siem_register_sinks",
    "notifier": "siem_register_notifiers",
}
_SPEC_TYPE: dict[str, type] = {kind: spec for spec, kind in KIND_OF.items()}

S = TypeVar("S")


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that was skipped, and why."""

    name: str
    origin: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.origin}) was not loaded: {self.error}"


@dataclass
class PluginInfo:
    """A loaded plugin: where it came from and what it provides."""

    name: str
    origin: str  # "built-in", "package NAME VERSION", "file PATH"
    version: str | None
    hooks: list[str] = field(default_factory=list)
    provides: list[tuple[str, str]] = field(default_factory=list)  # (kind, component name)


@dataclass(frozen=True)
class Registered:
    """A component descriptor and the plugin that registered it."""

    spec: Spec
    plugin: str


def disabled_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    raw = (environ if environ is not None else os.environ).get(DISABLED_ENV, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


class PluginHost:
    """Owns the plugin manager and the registries of the four plugin kinds."""

    def __init__(self, *, disabled: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = frozenset(disabled)
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[LoadFailure] = []
        self._registry: dict[str, dict[str, Registered]] | None = None
        self.hooks = Hooks(self.pm)

    # ------------------------------------------------------------------ loading

    def register(
        self, plugin: object, *, name: str, origin: str, version: str | None = None
    ) -> bool:
        """Register one plugin object (module or instance). Returns whether it was kept."""
        if name in self.disabled:
            log.info("plugin %r (%s) disabled by %s", name, origin, DISABLED_ENV)
            return False
        if name in self.plugins:
            self._fail(
                name,
                origin,
                f"a plugin named {name!r} is already loaded ({self.plugins[name].origin})",
            )
            return False
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validation errors, bad signatures
            self._fail(name, origin, f"{type(exc).__name__}: {exc}")
            return False
        unknown = [c.name for c in self.pm.get_hookcallers(plugin) or [] if c.spec is None]
        if unknown:
            self.pm.unregister(plugin)
            self._fail(
                name,
                origin,
                "implements unknown hook(s) "
                f"{', '.join(sorted(unknown))} (misspelt? hooks are siem_*)",
            )
            return False
        hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        self.plugins[name] = PluginInfo(name, origin, version, hooks)
        self._registry = None
        return True

    def load_builtins(self) -> None:
        from siem_plugins.builtin import BUILTINS

        for modname in BUILTINS:
            short = modname.rsplit(".", 1)[-1]
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                self._fail(short, "built-in", f"{type(exc).__name__}: {exc}")
                continue
            self.register(module, name=short, origin="built-in")

    def load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else None
            origin = f"package {dist_name} {version or ''}".rstrip()
            if ep.name in self.disabled:
                log.info("plugin %r (%s) disabled by %s", ep.name, origin, DISABLED_ENV)
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:
                self._fail(ep.name, origin, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.register(plugin, name=ep.name, origin=origin, version=version)

    def load_directory(self, folder: Path) -> None:
        """Import the ``*.py`` files of ``folder`` (not ``_*.py``) that pass the ownership
        and permission checks; each refused or failing one is a load failure."""
        if not folder.is_dir():
            log.debug("drop-in folder %s does not exist: no drop-in plugins loaded", folder)
            return
        try:
            unsafe = _unsafe_folder(folder)
        except OSError as exc:
            unsafe = f"cannot check it: {exc}"
        if unsafe is not None:
            self._fail(
                f"{folder.name}/*.py",
                f"folder {folder}",
                f"refusing to load drop-in plugins from {os.path.abspath(folder)}: {unsafe}",
            )
            return
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            name = path.stem
            origin = f"file {path}"
            if name in self.disabled:
                log.info("plugin %r (%s) disabled by %s", name, origin, DISABLED_ENV)
                continue
            try:
                source = _read_checked(path)
            except _Refused as exc:
                self._fail(name, origin, f"refusing to load {path}: {exc}")
                continue
            except OSError as exc:
                self._fail(name, origin, f"cannot read: {exc.strerror or exc}")
                continue
            try:
                module = _import_source(path, source, f"siem_plugins_dropin.{name}")
            except (Exception, SystemExit) as exc:
                self._fail(name, origin, f"import failed: {type(exc).__name__}: {exc}")
                continue
            if self.register(module, name=name, origin=origin):
                log.info("loaded drop-in plugin %r from %s", name, path)

    def finish_loading(self) -> None:
        """Last check, then build the registries (which reports duplicate names)."""
        self.pm.check_pending()
        if os.environ.get(TRACE_ENV, "") not in ("", "0"):
            self.pm.trace.root.setwriter(lambda msg: log.info("hook: %s", msg.rstrip()))
            self.pm.enable_tracing()
        self._build_registry()

    def _fail(self, name: str, origin: str, error: str) -> None:
        failure = LoadFailure(name, origin, error)
        self.failures.append(failure)
        log.warning("%s", failure)

    # ------------------------------------------------------------------ registries

    def _build_registry(self) -> dict[str, dict[str, Registered]]:
        registry: dict[str, dict[str, Registered]] = {kind: {} for kind in _REGISTRATION_HOOKS}
        for info in self.plugins.values():
            info.provides.clear()
        for kind, hook_name in _REGISTRATION_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            # Called per plugin (not as one hook call) so a failure or a duplicate is
            # attributed to the plugin at fault. Registration runs once per process.
            for impl in caller.get_hookimpls():  # registration order
                plugin_name = impl.plugin_name
                origin = self.plugins[plugin_name].origin
                try:
                    specs = list(impl.function() or ())
                except Exception as exc:
                    self._fail(
                        plugin_name, origin, f"{hook_name} raised {type(exc).__name__}: {exc}"
                    )
                    continue
                for spec in specs:
                    if not isinstance(spec, _SPEC_TYPE[kind]) or not isinstance(
                        spec, SourceSpec | FormatterSpec | SinkSpec | NotifierSpec
                    ):
                        self._fail(
                            plugin_name,
                            origin,
                            f"{hook_name} returned "
                            f"{type(spec).__name__}, expected {_SPEC_TYPE[kind].__name__}",
                        )
                        continue
                    taken = registry[kind].get(spec.name)
                    if taken is not None:
                        self._fail(
                            plugin_name,
                            origin,
                            f"{kind} name {spec.name!r} is already "
                            f"registered by plugin {taken.plugin!r} "
                            f"({self.plugins[taken.plugin].origin}); report this to the "
                            f"authors of {plugin_name!r} (or disable one with "
                            f"{DISABLED_ENV})",
                        )
                        continue
                    registry[kind][spec.name] = Registered(spec, plugin_name)
                    self.plugins[plugin_name].provides.append((kind, spec.name))
        self._registry = registry
        return registry

    def registry(self, kind: str) -> dict[str, Registered]:
        reg = self._registry if self._registry is not None else self._build_registry()
        return reg[kind]

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry(kind))

    def spec(self, kind: str, name: str, *, where: Options) -> Spec:
        """The descriptor called ``name``, or a located error listing what is available."""
        found = self.registry(kind).get(name)
        if found is not None:
            return found.spec
        message = f"unknown {kind} {name!r}; available: {', '.join(self.names(kind)) or 'none'}"
        if self.failures:
            message += "; plugins that failed to load: " + "; ".join(str(f) for f in self.failures)
        raise where.error("type", message)

    # ------------------------------------------------------------------ builders

    def _build(self, kind: str, name: str, options: Options, expect: type[S]) -> S:
        spec = self.spec(kind, name, where=options)
        component = spec.factory(options)
        if not isinstance(component, expect):
            raise options.error(
                "type",
                f"{kind} plugin {name!r} built a "
                f"{type(component).__name__}, which is not a {expect.__name__}",
            )
        options.finish()
        return component

    def source(self, name: str, options: Options) -> Source:
        return self._build("source", name, options, Source)  # type: ignore[type-abstract]

    def formatter(self, name: str, options: Options) -> Formatter:
        return self._build("formatter", name, options, Formatter)  # type: ignore[type-abstract]

    def sink(self, name: str, options: Options) -> Sink:
        return self._build("sink", name, options, Sink)  # type: ignore[type-abstract]

    def notifier(self, name: str, options: Options) -> Notifier:
        return self._build("notifier", name, options, Notifier)  # type: ignore[type-abstract]

    def section_of(self, kind: str, name: str) -> str | None:
        found = self.registry(kind).get(name)
        if found is None or not isinstance(found.spec, SinkSpec | NotifierSpec):
            return None
        return found.spec.section


class Hooks:
    """Typed facade over the lifecycle hooks: keyword calls, observer errors contained."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm

    def _call(self, name: str, **kwargs: Any) -> None:
        caller: Callable[..., Any] = getattr(self._pm.hook, name)
        try:
            caller(**kwargs)
        except Exception:
            log.exception("a plugin's %s hook failed (ignored)", name)

    def sync_started(self, *, integration: str, destination: str, intent: Intent) -> None:
        self._call(
            "siem_sync_started", integration=integration, destination=destination, intent=intent
        )

    def object_written(self, *, integration: str, receipt: ObjectReceipt) -> None:
        self._call("siem_object_written", integration=integration, receipt=receipt)

    def notified(self, *, integration: str, digest: Digest) -> None:
        self._call("siem_notified", integration=integration, digest=digest)

    def sync_failed(self, *, integration: str, destination: str, error: BaseException) -> None:
        self._call(
            "siem_sync_failed", integration=integration, destination=destination, error=error
        )


def create_host(
    plugins_dir: Path | None = None,
    *,
    entry_points: bool = True,
    disabled: Iterable[str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> PluginHost:
    """Build a host: built-ins, then installed packages, then the drop-in folder.

    :param plugins_dir: the drop-in folder (``None``: none).
    :param entry_points: load installed packages' plugins.
    :param disabled: plugin names not to load (default: ``SIEM_DISABLED_PLUGINS``).
    :param extra: ``(name, plugin)`` pairs registered last (tests, embedding).
    """
    host = PluginHost(disabled=disabled_from_env() if disabled is None else disabled)
    host.load_builtins()
    if entry_points:
        host.load_entry_points()
    if plugins_dir is not None:
        host.load_directory(plugins_dir)
    for name, plugin in extra:
        host.register(plugin, name=name, origin="embedded")
    host.finish_loading()
    return host


class _Refused(Exception):
    """A drop-in file or folder that someone else could have written."""


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _user(uid: int) -> str:
    name = _user_name(uid)
    return f"{name} (uid {uid})" if name != str(uid) else f"uid {uid}"


def _trust(path: Path, st: os.stat_result, what: str, *, sticky_ok: bool = False) -> str | None:
    """Why ``path`` (``what``: "the folder", "its parent folder /x", ...) cannot be
    trusted, or None: owned by the process's user or root, not writable by group or
    others (a parent with the sticky bit may be, as /tmp: nobody can rename our entries
    in it)."""
    uid = os.geteuid()
    if st.st_uid not in (uid, 0):
        return (
            f"{what} is owned by {_user(st.st_uid)}, not by this process's user "
            f"({_user(uid)}) or root; run chown {_user_name(uid)} {path}"
        )
    if st.st_mode & 0o022 and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        return (
            f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run chmod go-w {path}"
        )
    return None


def _unsafe_parents(*paths: Path) -> str | None:
    """Why a parent folder of one of ``paths`` cannot be trusted (whoever can write one
    can replace what is in it), or None."""
    seen: set[Path] = set()
    for path in paths:
        for parent in path.parents:
            if parent in seen:
                continue
            seen.add(parent)
            problem = _trust(parent, parent.stat(), f"its parent folder {parent}", sticky_ok=True)
            if problem is not None:
                return problem
    return None


def _unsafe_folder(folder: Path) -> str | None:
    """Why the drop-in folder cannot be trusted (itself or its symlink target, the
    parents of both), or None."""
    given = Path(os.path.abspath(folder))
    real = folder.resolve()
    what = "the folder" if real == given else f"the folder (a link to {real})"
    return _trust(real, real.stat(), what) or _unsafe_parents(given, real)


def _read_checked(path: Path) -> bytes:
    """The source of a drop-in file, read from the very file that passed the checks.

    Opened (its symlinks resolved, the target's folders checked) and then checked on the
    open descriptor, so it cannot be swapped in between. Raises :class:`_Refused`."""
    real = path.resolve()
    if real.parent != path.parent.resolve():
        # A link out of the (checked) drop-in folder: the target's folders count too.
        problem = _unsafe_parents(real)
        if problem is not None:
            raise _Refused(problem)
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("not a regular file")
        what = "the file" if real == Path(os.path.abspath(path)) else f"its target {real}"
        problem = _trust(real, st, what)
        if problem is not None:
            raise _Refused(problem)
        return f.read()


def _import_source(path: Path, source: bytes, module_name: str) -> ModuleType:
    """A module run from ``source`` (the checked bytes of ``path``).

    Compiled here rather than by the import system, which would also read and write
    ``__pycache__`` beside the file: a cached ``.pyc`` is not covered by the checks.
    """
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    code = compile(source, str(path), "exec", dont_inherit=True)
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102  (the plugin's own code, checked above)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


__all__ = [
    "FormatterSpec",
    "Hooks",
    "LoadFailure",
    "NotifierSpec",
    "PluginHost",
    "PluginInfo",
    "SinkSpec",
    "SourceSpec",
    "create_host",
]
