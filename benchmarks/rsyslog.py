"""rsyslog as a private instance: the same events, JSON-parsed, written as RFC 5424 lines.

Debian's ``rsyslog`` package (``benchmarks/setup.sh`` installs it) is started as
``rsyslogd -n -f <conf> -i <pidfile>`` with its own work directory: the system's
rsyslog, if any, is never touched. The configuration:

* ``imfile`` reads the NDJSON file (the stored bytes, one event per line) from its
  start, one message per line;
* ``mmjsonparse`` (``cookie=""``: plain JSON, no ``@cee:``) parses every message;
* the template takes ``$!timestamp`` and ``$!log_type`` from the parsed event and the
  body as the message without its braces (``substring``), giving exactly the bytes of
  siem-plugins' ``syslog`` formatter (``<134>1 TS - metadefender-it-access - MSGID -
  BODY``); the benchmark checks they are equal;
* ``omfile`` writes them to one file (64 KiB write buffer, flushed per batch).

Single-threaded: one main-queue worker. Multi-threaded: N workers (the main queue is
then parallel, the file action serialised); the lines are then not in input order, so
that output is checked as a multiset.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.dataset import SYSLOG_APP, SYSLOG_PRI

CONFIG = """\
global(workDirectory="{work}" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off")
module(load="imfile" mode="inotify")
module(load="mmjsonparse")
main_queue(queue.type="FixedArray" queue.size="200000" queue.workerThreads="{workers}"
           queue.dequeueBatchSize="{batch}")
template(name="rfc5424" type="list") {{
  constant(value="<{pri}>1 ")
  property(name="$!timestamp")
  constant(value=" - {app} - ")
  property(name="$!log_type")
  constant(value=" - ")
  property(name="$.body")
  constant(value="\\n")
}}
input(type="imfile" file="{input}" tag="siem" freshStartTail="off" ruleset="fmt")
ruleset(name="fmt") {{
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  set $.body = substring($rawmsg, 1, strlen($rawmsg) - 2);
  action(type="omfile" file="{output}" template="rfc5424" ioBufferSize="64k")
}}
"""


def rsyslogd() -> str | None:
    """The rsyslogd binary, if installed with the modules the configuration loads."""
    exe = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None
    )
    if exe is None:
        return None
    for libdir in ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog"):
        if Path(libdir, "mmjsonparse.so").exists() and Path(libdir, "imfile.so").exists():
            return exe
    return None


def version(exe: str) -> str:
    import subprocess

    out = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False).stdout
    # "rsyslogd  8.2302.0 (aka 2023.02) compiled with:" -> "8.2302.0"
    words = out.split()
    return words[1] if len(words) > 1 else "?"


def prepare(root: Path, input_file: Path, *, workers: int, batch: int = 1024) -> list[str]:
    """Write a fresh private instance under ``root``; returns its command line."""
    if root.exists():
        shutil.rmtree(root)
    work = root / "work"
    work.mkdir(parents=True)
    conf = root / "rsyslog.conf"
    conf.write_text(
        CONFIG.format(
            work=work,
            workers=workers,
            batch=batch,
            pri=SYSLOG_PRI,
            app=SYSLOG_APP,
            input=input_file,
            output=root / "out.log",
        )
    )
    exe = rsyslogd()
    if exe is None:
        raise RuntimeError("rsyslogd with imfile and mmjsonparse is not installed")
    return [exe, "-n", "-f", str(conf), "-i", str(root / "rsyslogd.pid")]


def output(root: Path) -> Path:
    return root / "out.log"
