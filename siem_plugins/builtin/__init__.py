"""Built-in plugins, registered through the same path as third-party ones.

The order is deliberate: the store first (the source every config needs), then the
formatters, then sinks and notifiers. Names registered here are taken; a third-party
plugin registering the same name is rejected with a message naming both.
"""

BUILTINS: tuple[str, ...] = (
    "siem_plugins.builtin.store",
    "siem_plugins.builtin.jsonfmt",
    "siem_plugins.builtin.syslog",
    "siem_plugins.builtin.ocsf",
    "siem_plugins.builtin.ecs",
    "siem_plugins.builtin.cef",
    "siem_plugins.builtin.leef",
    "siem_plugins.builtin.local",
    "siem_plugins.builtin.s3",
    "siem_plugins.builtin.email",
    "siem_plugins.builtin.outbox",
)
