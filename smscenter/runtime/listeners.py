"""What every door's listener shares: the one line when it cannot take its port, its TLS."""

from __future__ import annotations

import ssl


def listen_error(exc: OSError, what: str, host: str, port: int) -> OSError:
    """``exc`` (from binding a listener) as one line naming the listener and its address:
    the OS's own message leaves the address out ("Address already in use")."""
    reason = (exc.strerror or str(exc)).rsplit(": ", 1)[-1]  # asyncio's repeats the address
    return OSError(exc.errno, f"cannot listen on {host}:{port} ({what}): {reason}")


def server_tls_context(cert, key) -> ssl.SSLContext:
    """A listener's TLS: TLS 1.2 at least, the certificate chain and key of its config."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context
