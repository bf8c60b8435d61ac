"""The one redactor for ID card data: names, ID numbers, addresses, free text.

Every value that leaves the ID card driver goes through here. The photo and fingerprint
are never decoded or returned; a card record says only whether a photo was present.

``redact_text`` finds 18-character citizen ID numbers and mainland mobile numbers anywhere in
free text (log lines, JSON) and masks them; :class:`RedactingFilter` applies it to log records,
their tracebacks included.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .codec import GENDERS, CardText, CardType, birth_year, id_birth_matches, id_checksum_ok

_MAX_STARS = 4
_ADDRESS_KEEP = 6


def mask_name(name: str) -> str:
    """``"张三丰"`` -> ``"张**"``: the first character kept, at most four stars."""
    name = name.strip()
    if len(name) <= 1:
        return "*" if name else ""
    return name[0] + "*" * min(len(name) - 1, _MAX_STARS)


def mask_id(id_number: str) -> str:
    """``"11010519491231002X"`` -> ``"1101**********002X"``: first 4 and last 4 kept.

    Numbers of 8 characters or fewer are starred out whole.
    """
    s = id_number.strip()
    if len(s) <= 8:
        return "*" * len(s)
    return s[:4] + "*" * (len(s) - 8) + s[-4:]


def mask_address(address: str) -> str:
    """The first few characters (province/city/district level) then ``***``."""
    s = address.strip()
    if not s:
        return ""
    keep = min(_ADDRESS_KEEP, len(s) // 2)
    return s[:keep] + "***"


# Not inside a longer run of digits, except right after an escape (``\x08``, ``\u2028``: repr() and JSON of a
# string with a control character just before the number).
_START = r"(?:(?<![0-9])|(?<=\\x[0-9a-fA-F]{2})|(?<=\\u[0-9a-fA-F]{4})|(?<=\\U[0-9a-fA-F]{8}))"
_ID_RE = re.compile(_START + r"([0-9]{17}[0-9Xx])(?![0-9Xx])")
# Foreigner permanent residence ID (2017): three letters (nationality) + twelve digits.
_PERMIT_RE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{3}[0-9]{12})(?![0-9])")


# Mainland mobile numbers: 1[3-9] and nine more digits, alone or after +86 / 0086 / 86 (in brackets or not), written
# whole or in 3-4-4 groups split by spaces, hyphens or dots; not inside a longer run of digits (_START).
_SEP = r"[ \t.\-]?"
_PHONE_RE = re.compile(
    _START + r"(?:(?:\(\s?(?:\+|00)?86\s?\)|(?:\+|00)?86)" + _SEP + r")?"
    r"(1[3-9][0-9])" + _SEP + r"([0-9]{4})" + _SEP + r"([0-9]{4})(?![0-9])"
)


def mask_phone(digits: str) -> str:
    """``"13812345678"`` -> ``"*******5678"``: the last four digits kept, nothing else."""
    return "*" * (len(digits) - 4) + digits[-4:]


def redact_text(text: str) -> str:
    """Mask every resident ID number (17 digits + digit/X), foreigner permit number and mobile number in ``text``."""
    text = _ID_RE.sub(lambda m: mask_id(m.group(1)), text)
    text = _PERMIT_RE.sub(lambda m: mask_id(m.group(1)), text)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(1) + m.group(2) + m.group(3)), text)


class RedactingFilter(logging.Filter):
    """Logging filter that runs :func:`redact_text` over each record's final message, its exception's traceback
    (an exception's text quotes what it failed on) and its stack text, before any handler writes them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # formatted here once; Formatter.format uses record.exc_text when it is set
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


@dataclass(frozen=True)
class MaskedCard:
    """What the driver returns for a card read: masked identity, no photo, no raw text."""

    type: CardType
    name_masked: str
    id_masked: str
    address_masked: str
    gender: str  # "male", "female", "unknown", "unspecified"
    nation: str  # nation code "01".."56"/"97"/"98" on resident cards, "" otherwise
    birth_year: int | None
    valid_to: str  # YYYYMMDD or "长期"
    id_checksum_ok: bool | None  # None where the card's number has no check digit (foreigner)
    id_birth_ok: bool | None
    photo_present: bool
    fingerprint_present: bool = False


def mask_card(card: CardText, *, photo_present: bool, fingerprint_present: bool = False) -> MaskedCard:
    """Turn decoded card text into a :class:`MaskedCard`. Callers drop ``card`` afterwards."""
    checked = card.type != "foreigner"
    return MaskedCard(
        type=card.type,
        name_masked=mask_name(card.name),
        id_masked=mask_id(card.id_number),
        address_masked=mask_address(card.address),
        gender=GENDERS.get(card.gender, "unknown"),
        nation=card.nation,
        birth_year=birth_year(card),
        valid_to=card.valid_to,
        id_checksum_ok=id_checksum_ok(card.id_number) if checked else None,
        id_birth_ok=id_birth_matches(card.id_number, card.birth) if checked else None,
        photo_present=photo_present,
        fingerprint_present=fingerprint_present,
    )
