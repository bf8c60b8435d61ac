"""Mobile numbers never reach the log (catalogue S16, phone part): generated numbers in every common form, put
into log messages, their arguments and exceptions, come out with at most their last four digits.

Runs the log pipeline the agent (and the server) runs: :func:`agent.logs.setup`'s redacting filter on a
stream handler.
"""

from __future__ import annotations

import io
import logging
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.idcard.mask import RedactingFilter, redact_text

PREFIXES = ["", "+86", "86", "0086", "(+86)", "(86)", "+86 ", "+86-", "0086 ", "( +86 ) "]
SEPARATORS = ["", " ", "-", "."]
# text around the number: anything but digits (a digit next to it makes a longer number, not a phone number)
AROUND = st.text(alphabet=st.characters(blacklist_categories=("Nd",), blacklist_characters="\x00"), max_size=12)


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, str]:
    """(the 11 digits, how they are written)."""
    digits = "1" + str(draw(st.integers(3, 9))) + "".join(str(draw(st.integers(0, 9))) for _ in range(9))
    sep = draw(st.sampled_from(SEPARATORS))
    written = draw(st.sampled_from(PREFIXES)) + digits[:3] + sep + digits[3:7] + sep + digits[7:]
    return digits, written


def _pipeline() -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))  # no time: its digits are no number
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("agent.test_log_redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, buf


def _leaks(digits: str, out: str) -> bool:
    """Whether the number, or its first seven digits, can be read on one line of ``out`` (separators dropped). Per
    line: the digits of the whole output run together once made a false leak out of a timestamp's ",713", a
    traceback's "line 60" and a masked "0000"."""
    for line in out.splitlines():
        only = re.sub(r"[^0-9]", "", line)
        if digits in only or digits[:7] in only:
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(phone=phones(), before=AROUND, after=AROUND)
def test_no_mobile_number_reaches_the_log(phone: tuple[str, str], before: str, after: str) -> None:
    digits, written = phone
    logger, buf = _pipeline()
    text = f"{before}{written}{after}"
    logger.warning("modem answered %s", text)  # in an argument
    logger.error(f"contact: {text}")  # in the message itself
    try:
        raise ValueError(f"bad field {text!r}")
    except ValueError:
        logger.exception("config rejected")  # in a traceback
    out = buf.getvalue()
    assert not _leaks(digits, out), out
    assert out.count(digits[-4:]) >= 3, "the last four digits are kept, so an engineer can tell numbers apart"


def test_other_numbers_are_left_alone() -> None:
    for text in ("ts=1796559620123", "bytes=138123456789", "imei 868613812345670", "csq 13,99", "2026-12-06 13:12:34"):
        assert redact_text(text) == text, text
    assert redact_text("ID 11010519491231002X tel 13912345678") == "ID 1101**********002X tel *******5678"
