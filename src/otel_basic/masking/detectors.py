"""Built-in PII and secret detectors.

Each detector is one precompiled regex plus a cheap pre-check (so most strings never reach the regex) and a
``find`` function that validates a regex candidate (Luhn for cards, mod-97 for IBANs, digit counts for
phones, entropy for ``key=...`` assignments). Validation is what keeps false positives down: a regex alone
cannot tell a card number from an order number, or a phone number from a timestamp.

A detector only *finds*; the :class:`~otel_basic.masking.masker.Masker` turns each hit into a typed,
stable token such as ``<email:1f3a9c>``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "BUILTIN_DETECTORS",
    "DEFAULT_DETECTORS",
    "Detector",
    "Hit",
    "iban_valid",
    "luhn_valid",
]

Hit = tuple[int, int, str]
"""``(start, end, normalized)``: the span of the secret inside the string and the value to hash."""

_DIGIT = re.compile(r"\d").search
_LETTER = re.compile(r"[A-Za-z]").search


def _has_digit(text: str) -> bool:
    return _DIGIT(text) is not None


def _has_at(text: str) -> bool:
    return "@" in text


def _whole(normalize: Callable[[str], str] | None = None) -> Callable[[re.Match[str]], Hit | None]:
    def find(m: re.Match[str]) -> Hit | None:
        text = m.group()
        return m.start(), m.end(), normalize(text) if normalize else text

    return find


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive value: ``label`` names the token (``<label:hash>``).

    ``find`` receives each regex match and returns the part to replace with the normalized value to hash,
    or ``None`` when validation says it is not the real thing (the text is then left as it was).
    ``precheck`` is a fast test run before the regex; ``None`` means always run the regex.
    """

    name: str
    label: str
    pattern: re.Pattern[str]
    find: Callable[[re.Match[str]], Hit | None] = field(default_factory=_whole)
    precheck: Callable[[str], bool] | None = None


# --- email -------------------------------------------------------------------------------------------
# Unicode-aware local part (josé.müller@...), dotted domain, alphabetic TLD. Starts only at a token boundary
# so the scan does not retry inside every word.
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+[^\W\d_]{2,}(?![\w-])")

EMAIL = Detector("email", "email", _EMAIL, _whole(str.lower), _has_at)


# --- payment cards -----------------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    """Luhn checksum over a string of digits (other characters are ignored)."""
    total = 0
    parity = False
    for ch in reversed(digits):
        if not ch.isdigit():
            continue
        d = ord(ch) - 48
        if parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        parity = not parity
    return total % 10 == 0


# Issuer prefixes 2-6 (Mastercard 2-series, Amex/Diners/JCB 3, Visa 4, Mastercard 5, Discover 6): this alone
# keeps nanosecond/millisecond epoch timestamps (which start with 1) out. Separators: single space or dash.
_CARD = re.compile(r"(?<![\w+.])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\w-]|\.\d)")


def _find_card(m: re.Match[str]) -> Hit | None:
    digits = re.sub(r"\D", "", m.group())
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return None
    return m.start(), m.end(), digits


CARD = Detector("card", "card", _CARD, _find_card, _has_digit)


# --- IBAN ---------------------------------------------------------------------------------------------
# Official IBAN lengths (SWIFT registry). With the length known, trailing upper-case words swallowed by the
# regex ("... 0130 00 FOR ...") are cut off before the mod-97 check.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")


def iban_valid(compact: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN without spaces."""
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _find_iban(m: re.Match[str]) -> Hit | None:
    text = m.group()
    expected = IBAN_LENGTHS.get(text[:2])
    if expected is None:
        compact = text.replace(" ", "")
        if 15 <= len(compact) <= 34 and iban_valid(compact):
            return m.start(), m.end(), compact
        return None
    # Walk to the end of the ``expected``-th alphanumeric character.
    seen = 0
    end = 0
    for end, ch in enumerate(text, 1):  # noqa: B007 - end is used after the loop
        if ch != " ":
            seen += 1
            if seen == expected:
                break
    if seen < expected or (end < len(text) and text[end] != " "):
        return None
    compact = text[:end].replace(" ", "")
    if not iban_valid(compact):
        return None
    return m.start(), m.start() + end, compact


IBAN = Detector("iban", "iban", _IBAN, _find_iban, _has_digit)


# --- phone numbers -------------------------------------------------------------------------------------
# International: "+" country code then up to 6 groups, each optionally in parentheses, separated by at most
# one space/dot/dash. National: a leading 0 with separated groups (0176 12345678, 020 7946 0958,
# 030/901820, 03-1234-5678, 06 12 34 56 78) or the North American (415) 555-0132 / 415-555-0132 shapes.
# Plain digit runs without "+", "0" or separators are never phones: they are ids, counts and timestamps.
_PHONE = re.compile(
    r"(?<![\w+])\+[1-9]\d{0,3}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,5})){1,6}(?![\w]|[.,]\d)"
    r"|(?<![\w+./:-])0\d{1,4}(?:[ /-]\d{2,8}){1,4}(?![\w/:-]|[.,]\d)"
    r"|(?<![\w+./:-])(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[ .-]\d{4}(?![\w-]|[.,]\d)"
)
_GROUPS = re.compile(r"\d+")


def _find_phone(m: re.Match[str]) -> Hit | None:
    text = m.group()
    groups = _GROUPS.findall(text)
    digits = "".join(groups)
    if text[0] == "+":
        if not 8 <= len(digits) <= 15:
            return None
        # "+1234.56" is an amount, not a phone.
        if len(groups) == 2 and text[len(groups[0]) + 1] in ".,":
            return None
        return m.start(), m.end(), "+" + digits
    if text[0] == "0":
        if not 9 <= len(digits) <= 12:
            return None
        french = len(groups) == 5 and all(len(g) == 2 for g in groups)
        # A short first AND second group is a date ("01-02-2024", "05 03 2024"), not an area code.
        if len(groups[0]) <= 2 and len(groups[1]) < 3 and not french:
            return None
    return m.start(), m.end(), digits


PHONE = Detector("phone", "phone", _PHONE, _find_phone, _has_digit)


# --- bearer / basic credentials ------------------------------------------------------------------------
_AUTH = re.compile(r"(?i)\b(bearer|basic)[ \t]+([A-Za-z0-9._~+/=-]{8,})")
_TOKEN_CHARS = re.compile(r"[\d._~+/=-]")


def _find_auth(m: re.Match[str]) -> Hit | None:
    scheme, cred = m.group(1), m.group(2)
    if scheme.lower() == "basic":
        # Real Basic credentials decode to "user:password"; "basic information" does not.
        try:
            decoded = base64.b64decode(cred + "=" * (-len(cred) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
        if b":" not in decoded:
            return None
    elif _TOKEN_CHARS.search(cred) is None:
        # "bearer instruments": a real token has digits or punctuation.
        return None
    return m.start(2), m.end(2), cred


AUTH = Detector("bearer", "token", _AUTH, _find_auth)


# --- well-known API key shapes ---------------------------------------------------------------------------
_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:lf-|proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic, Langfuse secret
    r"|pk-lf-[A-Za-z0-9-]{8,}"  # Langfuse public key
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|xox[abeprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}"  # Stripe
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")(?![A-Za-z0-9_-])"
)

API_KEY = Detector("api_key", "secret", _API_KEY)


# --- key=value secret assignments --------------------------------------------------------------------------
_ASSIGN = re.compile(
    r"(?i)\b(api[_-]?key|access[_-]?key|secret[_-]?key|client[_-]?secret|private[_-]?key"
    r"|(?:access|refresh|auth|id)[_-]?token|token|secret|key|password|passwd|pwd)"
    r"[\"']?[ \t]*[=:][ \t]*[\"']?([^\s\"'&,;<>]+)"
)


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _find_assignment(m: re.Match[str]) -> Hit | None:
    name, value = m.group(1).lower(), m.group(2)
    if name in ("password", "passwd", "pwd"):
        if len(value) < 4:
            return None
    elif len(value) < 16 or _DIGIT(value) is None or _LETTER(value) is None or _entropy(value) < 3.0:
        # "key: internationalization" is prose; a real key is long, random and mixes letters and digits.
        return None
    return m.start(2), m.end(2), value


ASSIGNMENT = Detector("assignment", "secret", _ASSIGN, _find_assignment)


BUILTIN_DETECTORS: dict[str, Detector] = {
    d.name: d for d in (AUTH, API_KEY, ASSIGNMENT, EMAIL, IBAN, CARD, PHONE)
}
"""By name. Order matters: secrets first, then IBAN before card before phone (most specific first)."""

DEFAULT_DETECTORS: tuple[Detector, ...] = tuple(BUILTIN_DETECTORS.values())
