"""The one place the agent calls psutil for processes: a vanished or forbidden process is `None`, never an error.

A process can exit between two calls, and an unprivileged agent may not read other users' processes; both are
ordinary on a staff machine, so every lookup here answers `None` for them instead of raising.

Command lines are scrubbed before they leave this module: passwords, tokens, quoted literals and long digit runs
(identity, card or phone numbers typed into `psql -c …`) are replaced, so that none can reach the spool.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psutil

from agent.events import ProcessInfo

T = TypeVar("T")

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, PermissionError)


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T | None:
    """`fn(*args, **kwargs)`, or None when the process is gone or may not be read."""
    try:
        return fn(*args, **kwargs)
    except _GONE:
        return None


def process(pid: int) -> psutil.Process | None:
    return call(psutil.Process, pid)


def process_info(pid: int) -> ProcessInfo | None:
    """Name, executable, scrubbed command line, parent and OS user of `pid`; None if it is gone."""
    p = process(pid)
    if p is None:
        return None
    with p.oneshot():
        name = call(p.name)
        exe = call(p.exe)
        argv = call(p.cmdline)
        ppid = call(p.ppid)
        user = call(p.username)
    if name is None and argv is None and user is None:
        return None  # exited while we looked
    return ProcessInfo(
        pid=pid,
        name=_clip(name, 1024),
        exe=_clip(exe, 4096),
        cmdline=scrub_cmdline(argv) if argv else None,
        ppid=ppid,
        username=_clip(user, 256),
    )


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


# -------------------------------------------------------------------------------------------- scrubbing

_SECRET_WORD = r"(?:pass(?:word|wd)?|pwd|secret|token|api[-_]?key|credential|auth)"
_SECRET_FLAG = re.compile(rf"^--?[\w.-]*{_SECRET_WORD}[\w.-]*$", re.IGNORECASE)
_SECRET_ASSIGN = re.compile(rf"([\w.-]*{_SECRET_WORD}[\w.-]*\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s;&]+)", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'")
_LONG_DIGITS = re.compile(r"\d{7,}")
_MYSQL_LIKE = re.compile(r"(mysql|mariadb)", re.IGNORECASE)


def scrub_cmdline(argv: Sequence[str], limit: int = 1024) -> str:
    """The command line as one string with secrets and literal values replaced by `***` or `?`."""
    out: list[str] = []
    hide_next = False
    mysql = bool(argv) and bool(_MYSQL_LIKE.search(os.path.basename(argv[0])))
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        if _SECRET_FLAG.match(arg):
            out.append(arg)
            hide_next = True
            continue
        if mysql and arg.startswith("-p") and len(arg) > 2 and not arg.startswith("--"):
            out.append("-p***")
            continue
        arg = _URL_USERINFO.sub(r"\1***@", arg)
        arg = _SECRET_ASSIGN.sub(r"\1***", arg)
        arg = _QUOTED.sub("'?'", arg)
        arg = _LONG_DIGITS.sub("?", arg)
        out.append(arg)
    text = " ".join(_quote(a) for a in out)
    return text[:limit]


def _quote(arg: str) -> str:
    return f'"{arg}"' if (not arg or any(c.isspace() for c in arg)) else arg


# ------------------------------------------------------------------------------------------- own usage


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_seconds: float  # user + system time since the process started
    rss_bytes: int


def self_usage() -> Usage:
    """This process's CPU time and resident memory."""
    p = psutil.Process()
    with p.oneshot():
        t = p.cpu_times()
        rss = p.memory_info().rss
    return Usage(cpu_seconds=t.user + t.system, rss_bytes=rss)


@functools.lru_cache(maxsize=1024)
def username_of_uid(uid: int) -> str:
    """The login name of `uid`, or the number itself when it has none (or the OS has no such table)."""
    try:
        import pwd
    except ImportError:  # pragma: no cover - not a POSIX system
        return str(uid)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
