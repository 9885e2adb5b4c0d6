"""Upstream message ids without being told the upstream's convention (``message_id = "auto"``).

An upstream names a message twice: in ``submit_sm_resp`` and in its receipt. Many write both
the same way; many others write one in hex and the other in decimal, or pad one with zeros
(the ``hex-to-decimal`` bug Kannel and Jasmin users know). With ``auto`` nobody has to find out
which by hand:

- a ``submit_sm_resp`` id is kept under its *key* (:func:`resp_key`): the id itself, except
  that an id made only of hex digits is kept as its number in lower-case hex without leading
  zeros — so ``00AB``, ``ab`` and ``0xAB`` are one key, and a decimal id such as ``0123``
  keeps its digits (``123``);
- a receipt's id gives one key per *reading* (:func:`receipt_keys`), as-is first: ``as-is``
  (the same id, case and leading zeros aside; and before that the id exactly as written,
  the key of parts kept before ``auto`` existed), ``hex-to-decimal`` (the receipt's decimal
  id is the submit_sm_resp's hex one), ``decimal-to-hex`` (the reverse);
- the receipt goes to the part found under the first key that finds one. Two readings giving
  the same key (``7`` is 7 in every reading), or several keys finding parts, make the match
  *ambiguous*: it is applied (as-is first) but teaches nothing;
- a :class:`ConventionLearner` learns the connector's reading from unambiguous matches that
  agree (``LEARN_AFTER`` in a row); from then on only that reading is used.

An early receipt (before its ``submit_sm_resp``) waits under its as-is key; the
``submit_sm_resp`` then looks for it under :func:`early_keys`.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations


# The id patterns and the clean-up are the receipt module's: one reading of an id.
from .receipt import _DECIMAL_ID, _HEX_ID, clean_message_id as _clean

__all__ = [
    "LEARN_AFTER",
    "READINGS",
    "ConventionLearner",
    "early_keys",
    "read_receipt_id",
    "read_resp_id",
    "receipt_keys",
    "resp_key",
]

#: The readings of a receipt's id, in the order they are tried: as-is first.
READINGS = ("as-is", "hex-to-decimal", "decimal-to-hex")

#: Unambiguous matches of one reading in a row that teach it.
LEARN_AFTER = 3

def _read(value: str) -> tuple[str, int | None]:
    """(key, number): an all-hex id's key is its number in lower-case hex (no leading
    zeros, no ``0x``); anything else is its own key, case kept (UUIDs, opaque ids), with no
    number."""
    if _HEX_ID.fullmatch(value) is None:
        return value, None
    number = int(value, 16)
    return format(number, "x"), number


def resp_key(raw: str) -> str:
    """The key a ``submit_sm_resp`` id is kept under. Raises ``MessageIdError``."""
    return _read(_clean(raw))[0]


def read_resp_id(raw: str, readings: tuple[str, ...] = READINGS) -> tuple[str, tuple[str, ...]]:
    """(:func:`resp_key`, :func:`early_keys`) of one ``submit_sm_resp`` id, read once."""
    value = _clean(raw)
    key, number = _read(value)
    keys: list[str] = []
    for reading in readings:
        if reading == "as-is":
            if value != key:
                keys.append(value)  # as a version before auto kept it
            found: str | None = key
        elif reading == "hex-to-decimal":  # its receipt says the number in decimal
            found = str(number) if number is not None else None
        elif reading == "decimal-to-hex":  # its receipt says the number in hex
            found = format(int(value, 10), "x") if number is not None and _DECIMAL_ID.fullmatch(value) else None
        else:
            raise ValueError(f"unknown reading {reading!r}; expected one of {READINGS}")
        if found is not None and found not in keys:
            keys.append(found)
    return key, tuple(keys)


def early_keys(raw: str, readings: tuple[str, ...] = READINGS) -> tuple[str, ...]:
    """The keys under which an early receipt for this ``submit_sm_resp`` id may wait (a
    receipt waits under its as-is key; before ``auto``, under the id as written), in the
    order of ``readings``, without repeats. Raises ``MessageIdError``."""
    return read_resp_id(raw, readings)[1]


def read_receipt_id(raw: str, readings: tuple[str, ...] = READINGS) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """(the key an early receipt waits under — its as-is key —, :func:`receipt_keys`) of one
    receipt id, read once."""
    value = _clean(raw)
    key, number = _read(value)
    keys: list[tuple[str, list[str]]] = []

    def add(found: str, reading: str) -> None:
        for known, names in keys:
            if known == found:
                names.append(reading)
                return
        keys.append((found, [reading]))

    for reading in readings:
        if reading == "as-is":
            if value != key:
                add(value, reading)  # a part kept before auto: the id as written
            add(key, reading)
        elif reading == "hex-to-decimal":  # the receipt's decimal is the response's hex
            if number is not None and _DECIMAL_ID.fullmatch(value):
                add(format(int(value, 10), "x"), reading)
        elif reading == "decimal-to-hex":  # the receipt's hex is the response's decimal
            if number is not None:
                add(str(number), reading)
        else:
            raise ValueError(f"unknown reading {reading!r}; expected one of {READINGS}")
    return key, tuple((found, tuple(names)) for found, names in keys)


def receipt_keys(raw: str, readings: tuple[str, ...] = READINGS) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``(key, readings that give it)`` for each distinct key a receipt id may name, in the
    order of ``readings``. The as-is reading also names the id exactly as written, first:
    the key of a part stored before ``auto`` existed (``as-is`` was the default then).
    Raises ``MessageIdError``."""
    return read_receipt_id(raw, readings)[1]


class ConventionLearner:
    """Learns one connector's reading from its receipts' matches.

    ``matched(readings, keys_hit)`` is told of each match: the readings that gave the key
    that matched, and how many of the receipt's keys found a part. Only an unambiguous match
    (one key found a part, and one reading gives that key) counts; ``LEARN_AFTER`` of them in
    a row with the same reading teach it, and an unambiguous match of another reading starts
    the count again. Once learnt (or given one, e.g. read back from storage) it stays.
    """

    def __init__(self, learnt: str | None = None, learn_after: int = LEARN_AFTER) -> None:
        if learnt is not None and learnt not in READINGS:
            raise ValueError(f"unknown reading {learnt!r}; expected one of {READINGS}")
        self.learnt = learnt
        self.learn_after = learn_after
        self._candidate: str | None = None
        self._streak = 0

    @property
    def readings(self) -> tuple[str, ...]:
        """The readings to try: the learnt one alone, or all of them, as-is first."""
        return (self.learnt,) if self.learnt is not None else READINGS

    def matched(self, readings: tuple[str, ...], keys_hit: int) -> str | None:
        """Count one match; the reading it taught, if it completed one, else None."""
        if self.learnt is not None or keys_hit != 1 or len(readings) != 1:
            return None  # learnt already, or ambiguous: never teaches
        reading = readings[0]
        if reading == self._candidate:
            self._streak += 1
        else:
            self._candidate, self._streak = reading, 1
        if self._streak >= self.learn_after:
            self.learnt = reading
            return reading
        return None
