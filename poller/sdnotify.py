"""systemd's notify protocol (`Type=notify`): READY, WATCHDOG, STATUS and STOPPING, as datagrams.

The protocol is one datagram of `KEY=value` lines sent to the AF_UNIX socket named by `$NOTIFY_SOCKET`
(a path, or an abstract-namespace name written with a leading `@`); see sd_notify(3). It is a few lines,
so it is done here rather than with a library. Outside systemd (no `$NOTIFY_SOCKET`) nothing is sent.

Notifying must never stop the daemon: a failed send is logged once and otherwise ignored.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Mapping

from poller.logs import get_logger

log = get_logger("poller.sdnotify")


class Notifier:
    """`notify(READY="1", STATUS="...")` sends one datagram to systemd; a no-op without a socket."""

    def __init__(self, address: str | None) -> None:
        self.address = _socket_address(address) if address else None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        environ = os.environ if environ is None else environ
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def __call__(self, **fields: str) -> bool:
        if self.address is None or not fields:
            return False
        # A newline inside a value would start a new field: STATUS is the only free text, keep it one line.
        message = "\n".join(f"{key}={' '.join(str(value).split())}" for key, value in fields.items())
        try:
            with self._lock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode("utf-8"))
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("systemd_notify_failed", error=str(exc), fields=sorted(fields))
            return False


def _socket_address(address: str) -> str:
    # "@name" is Linux's abstract namespace: the real address starts with a NUL byte.
    return "\0" + address[1:] if address.startswith("@") else address


def watchdog_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """systemd's WatchdogSec for this process (`$WATCHDOG_USEC`, meant for `$WATCHDOG_PID`), or None."""
    environ = os.environ if environ is None else environ
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000
