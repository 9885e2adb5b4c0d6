"""sd_notify without a dependency: READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1 and STATUS lines.

systemd's ``Type=notify`` units pass ``$NOTIFY_SOCKET``; outside systemd this is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


def notify(*lines: str) -> bool:
    """Send ``lines`` to the service manager; return False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd expects (seconds), or None if not enabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def reloading(status: str = "reloading the configuration") -> bool:
    """Tell the service manager a reload began: ``RELOADING=1`` with ``MONOTONIC_USEC``
    (systemd ≥ 253 with ``Type=notify-reload`` wants the time the reload started, on
    CLOCK_MONOTONIC, to tell this reload from an older one); ``READY=1`` ends it."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", f"STATUS={status}")
