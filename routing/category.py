"""Message category from ``service_type``: ``marketing`` (promotional) or ``alert``
(transactional).

An empty ``service_type`` means the account's default category. Otherwise the value, with
surrounding spaces ignored and compared case-insensitively, must be one of:

* ``MKT``, ``MARKETING`` → ``marketing``
* ``ALERT``, ``ALR``, ``TRANS`` → ``alert``
* ``CMT`` → the account's default: SMPP 3.4 §5.2.11's generic "Cellular Messaging" value,
  which several client stacks send by default; it says nothing about the category.

SMPP limits ``service_type`` to 5 characters, so ``MARKETING`` only arrives through other
interfaces. Anything else raises :class:`UnknownCategory` (answer ESME_RINVSERTYP). When the
account does not allow overrides, a value naming a category other than its default raises
:class:`CategoryOverrideNotAllowed`, a subclass, so it is answered the same way but can be
logged apart.
"""

from __future__ import annotations

__all__ = [
    "ALERT",
    "CATEGORIES",
    "MARKETING",
    "SERVICE_TYPES",
    "CategoryOverrideNotAllowed",
    "UnknownCategory",
    "category_for",
]

MARKETING = "marketing"
ALERT = "alert"
CATEGORIES = frozenset({MARKETING, ALERT})

SERVICE_TYPES: dict[str, str | None] = {
    "MKT": MARKETING,
    "MARKETING": MARKETING,
    "ALERT": ALERT,
    "ALR": ALERT,
    "TRANS": ALERT,
    "CMT": None,  # the account's default
}
"""Upper-cased service_type → category (``None``: the account's default)."""


class UnknownCategory(ValueError):
    """``service_type`` names no category we know (answer ESME_RINVSERTYP)."""


class CategoryOverrideNotAllowed(UnknownCategory):
    """``service_type`` asks for a category other than the account's, which may not
    override it (answer ESME_RINVSERTYP)."""


def category_for(service_type: str, account_default: str, allow_override: bool = True) -> str:
    """The category of a message: ``"marketing"`` or ``"alert"``.

    ``account_default`` must itself be a category (a plain ``ValueError`` otherwise: that is
    a configuration bug, not the partner's fault).
    """
    if account_default not in CATEGORIES:
        raise ValueError(f"unknown account category {account_default!r}")
    key = service_type.strip().upper()
    if not key:
        return account_default
    try:
        category = SERVICE_TYPES[key]
    except KeyError:
        raise UnknownCategory(f"unknown service_type {service_type!r}") from None
    if category is None or category == account_default:
        return account_default
    if not allow_override:
        raise CategoryOverrideNotAllowed(
            f"service_type {service_type!r} asks for {category}; the account is {account_default}"
            " and may not override it"
        )
    return category
