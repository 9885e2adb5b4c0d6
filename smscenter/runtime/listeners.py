"""What every door's listener says when it cannot take its port."""

from __future__ import annotations


def listen_error(exc: OSError, what: str, host: str, port: int) -> OSError:
    """``exc`` (from binding a listener) as one line naming the listener and its address:
    the OS's own message leaves the address out ("Address already in use")."""
    reason = (exc.strerror or str(exc)).rsplit(": ", 1)[-1]  # asyncio's repeats the address
    return OSError(exc.errno, f"cannot listen on {host}:{port} ({what}): {reason}")
