"""Rules that span keys or sections (duplicates, references, files that must exist), run
once the models validated."""

from __future__ import annotations

import grp
import ipaddress
import os
import re

from .sections import Settings
from .values import Address, format_seconds


def cross_check(s: Settings) -> list[str]:
    """Rules that span keys or sections; returns ``"path: problem"`` lines."""
    errors: list[str] = []
    srv = s.server

    if not srv.listen and not srv.tls_listen:
        errors.append("server.listen: no address to listen on (set listen or tls_listen)")
    seen_addr: dict[Address, str] = {}
    for key in ("listen", "tls_listen"):
        for i, addr in enumerate(getattr(srv, key)):
            where = f"server.{key}[{i}]"
            if addr in seen_addr:
                errors.append(f"{where}: {addr} is already used by {seen_addr[addr]}")
            seen_addr.setdefault(addr, where)
    for key in ("tls_cert", "tls_key"):
        path = getattr(srv, key)
        if srv.tls_listen and path is None:
            errors.append(f"server.{key}: required when tls_listen is set")
        elif path is not None and not path.is_file():
            errors.append(f"server.{key}: file not found: {path}")
    if srv.inactivity_timeout <= srv.enquire_link_interval:
        errors.append(
            "server.inactivity_timeout: must be longer than enquire_link_interval "
            f"({format_seconds(srv.enquire_link_interval)}), or live sessions get closed"
        )

    errors.extend(_control_socket_problems(s))
    errors.extend(_api_problems(s))

    first_account: dict[str, int] = {}
    keyword_owner: dict[tuple[str, str], int] = {}
    for i, acc in enumerate(s.accounts):
        if acc.system_id in first_account:
            j = first_account[acc.system_id]
            errors.append(
                f"account[{i}].system_id: duplicate system_id {acc.system_id!r} "
                f"(already used by account[{j}])"
            )
        first_account.setdefault(acc.system_id, i)
        for k, word in enumerate(acc.keywords):
            if not acc.short_codes:
                errors.append(f"account[{i}].keywords[{k}]: keywords need short_codes to route MO")
                break
            for code in acc.short_codes:
                owner = keyword_owner.setdefault((code, word.casefold()), i)
                if owner != i:
                    errors.append(
                        f"account[{i}].keywords[{k}]: keyword {word!r} on short code {code} "
                        f"is already routed to account[{owner}]"
                    )
        if acc.category == "marketing" and acc.sender_ids and s.optout is None:
            errors.append(
                f"optout.short_code: required because account[{i}] ({acc.system_id}) sends "
                "marketing from alphanumeric sender IDs, whose STOP mention names it"
            )

    for i, acc in enumerate(s.accounts):
        if acc.has_webhooks and acc.webhook_secret is None:
            key = "receipt_url" if acc.receipt_url is not None else "mo_url"
            errors.append(f"account[{i}].webhook_secret: required when {key} is set (webhooks are signed)")
        if acc.webhook_ca is not None and not acc.webhook_ca.is_file():
            errors.append(f"account[{i}].webhook_ca: file not found: {acc.webhook_ca}")
    if s.webhooks.retry_min > s.webhooks.retry_max:
        errors.append(f"webhooks.retry_min: must not exceed retry_max ({format_seconds(s.webhooks.retry_max)})")

    for key in s.windows.rules:
        if key != "*" and not re.fullmatch(r"[A-Z]{2}", key):
            errors.append(
                f"windows.rules.{key}: not a country: use an ISO code in capitals (\"FR\") or \"*\" for the rest"
            )

    first_connector: dict[str, int] = {}
    for i, con in enumerate(s.connectors):
        if con.name in first_connector:
            errors.append(
                f"connector[{i}].name: duplicate connector name {con.name!r} "
                f"(already used by connector[{first_connector[con.name]}])"
            )
        first_connector.setdefault(con.name, i)
        if con.reconnect_min > con.reconnect_max:
            errors.append(
                f"connector[{i}].reconnect_min: must not exceed reconnect_max "
                f"({format_seconds(con.reconnect_max)})"
            )
        if con.tls_ca is not None and not con.tls_ca.is_file():
            errors.append(f"connector[{i}].tls_ca: file not found: {con.tls_ca}")

    for i, route in enumerate(s.routes):
        for k, name in enumerate(route.connectors):
            con = s.connectors_by_name.get(name)
            if con is None:
                errors.append(f"route[{i}].connectors[{k}]: no connector named {name!r}")
            elif con.bind == "receiver":
                errors.append(
                    f"route[{i}].connectors[{k}]: connector {name!r} binds as receiver "
                    "and cannot send"
                )
        for k, sid in enumerate(route.accounts or ()):
            if sid not in first_account:
                errors.append(f"route[{i}].accounts[{k}]: no account with system_id {sid!r}")
    return errors



#: sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_UNIX_PATH = 107


def _control_socket_problems(s: Settings) -> list[str]:
    """The control socket's path must fit a Unix socket address, and its group exist."""
    errors = []
    path = s.control_socket_path
    size = len(os.fsencode(str(path)))
    if size > MAX_UNIX_PATH:
        where = "set" if s.server.control_socket is not None else "the default, beside [storage] keys,"
        errors.append(f"server.control_socket: {path} ({where}) is {size} bytes long; a Unix socket path "
                      f"has at most {MAX_UNIX_PATH}: choose a shorter one")
    group = s.server.control_group
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            errors.append(f"server.control_group: no group named {group!r} on this machine")
    return errors


def _api_problems(s: Settings) -> list[str]:
    """``[api]``: TLS unless it listens on loopback without a certificate; both files or none."""
    api = s.api
    errors: list[str] = []
    for key in ("tls_cert", "tls_key"):
        path = getattr(api, key)
        if path is not None and not path.is_file():
            errors.append(f"api.{key}: file not found: {path}")
    if (api.tls_cert is None) != (api.tls_key is None):
        missing = "tls_key" if api.tls_key is None else "tls_cert"
        errors.append(f"api.{missing}: required with {'tls_cert' if missing == 'tls_key' else 'tls_key'}")
    if api.listen is not None and api.tls_cert is None and api.tls_key is None and not _loopback(api.listen.host):
        errors.append(
            f"api.tls_cert: required when api.listen ({api.listen}) is not a loopback address "
            "(plain HTTP only on loopback)"
        )
    return errors


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
