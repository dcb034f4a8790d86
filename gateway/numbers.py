"""Numbers from outside the gateway (query strings, JSON bodies, phone formats, WebSocket
commands), read with bounded work and no I/O.

``Decimal`` and ``int`` are exact but not cheap: formatting ``1e-200000000`` writes two
hundred million digits, and ``int()`` of one refuses (or costs seconds) past a few thousand
digits. Every number the gateway takes goes through :func:`bounded_decimal` or
:func:`whole_number` first, so the arithmetic and formatting that follow are small.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = [
    "MAX_DIGITS",
    "MAX_EXPONENT",
    "MAX_NUMBER_CHARS",
    "MIN_EXPONENT",
    "NumberError",
    "bounded_decimal",
    "whole_number",
]

# A double needs 17 significant digits and a nanosecond timestamp 20; text longer than 64
# characters is not a reading, and bounding it keeps int()/Decimal() work small.
MAX_NUMBER_CHARS = 64
# Significant digits of any number, however it arrived (a JSON number is bounded only by the
# body): as many as the longest text we read.
MAX_DIGITS = MAX_NUMBER_CHARS
# Decimal exponent bounds. Every quantity the gateway takes (degrees, kilometres, seconds or
# milliseconds since 1970, counts) is far below 1e64: larger magnitudes saturate to infinity,
# which every range check refuses. Every double (down to 5e-324) is above 1e-400 and kept
# exactly; a smaller non-zero number is refused, so none costs more than ~470 digits to format.
MAX_EXPONENT = 64
MIN_EXPONENT = -400

# Decimal numbers as text (ASCII digits only: \d would admit other scripts' digits).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WHOLE = re.compile(r"[0-9]+")
# ceil(64 * log2(10)): an int of more bits may have more than MAX_DIGITS digits.
_MAX_INT_BITS = math.ceil(MAX_DIGITS * math.log2(10))


class NumberError(ValueError):
    """Text or a JSON value that is not a number the gateway reads; the message says why
    (to be prefixed with the field's name)."""


def bounded_decimal(value: object) -> Decimal:
    """The exact value of a JSON-ish number (int, float, Decimal or numeric text).

    Floats go through their shortest repr (what was written). The result is finite with at
    most MAX_DIGITS digits and a magnitude between 10**MIN_EXPONENT and 10**MAX_EXPONENT, or
    zero, or an infinity for a magnitude past 10**MAX_EXPONENT (so that a range check refuses
    it). Raises NumberError for anything else: not a number, NaN, infinite input, text over
    MAX_NUMBER_CHARS, too many digits, or a non-zero magnitude below 10**MIN_EXPONENT.
    """
    if isinstance(value, bool):
        raise NumberError("is not a number")
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise NumberError(f"has more than {MAX_DIGITS} digits")
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NumberError("is not a finite number")
        number = Decimal(repr(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise NumberError("is not a finite number")
        number = value
    elif isinstance(value, str):
        if len(value) > MAX_NUMBER_CHARS:
            raise NumberError(f"is longer than {MAX_NUMBER_CHARS} characters")
        text = value.strip()  # as Java's parseDouble does
        if not _NUMBER.fullmatch(text):
            raise NumberError("is not a number")
        try:
            number = Decimal(text)
        except InvalidOperation:  # unreachable after the pattern; kept so none can escape
            raise NumberError("is not a number") from None
    else:
        raise NumberError("is not a number")
    return _bounded(number)


def _bounded(number: Decimal) -> Decimal:
    if number.is_zero():
        return Decimal(0)
    magnitude = number.adjusted()  # the exponent of the leading digit: cheap at any size
    if magnitude > MAX_EXPONENT:
        return Decimal("-Infinity") if number.is_signed() else Decimal("Infinity")
    if magnitude < MIN_EXPONENT:
        raise NumberError(f"is too small: not zero, yet below 1e{MIN_EXPONENT}")
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    if len(digits) > MAX_DIGITS:
        # Trailing zeros are not significant (1.5000... is 1.5); Decimal.normalize would
        # round to the context's precision, so strip them by hand.
        kept = "".join(map(str, digits)).rstrip("0")
        if len(kept) > MAX_DIGITS:
            raise NumberError(f"has more than {MAX_DIGITS} significant digits")
        number = Decimal((sign, tuple(map(int, kept)), exponent + len(digits) - len(kept)))
    return number


def whole_number(text: str) -> int:
    """A non-negative whole number written in ASCII digits (a query parameter), of at most
    MAX_NUMBER_CHARS digits; raises NumberError otherwise."""
    if len(text) > MAX_NUMBER_CHARS:
        raise NumberError(f"is longer than {MAX_NUMBER_CHARS} characters")
    if not _WHOLE.fullmatch(text):
        raise NumberError("must be a whole number")
    return int(text)
