"""Built-in PII and secret detectors, tuned so masking stays cheap on every exported span.

Why it is written this way: CPython's ``re`` costs ~5-10 ns per character for *each* pass over a string,
even when nothing matches, and more wherever it has to try alternatives, while ``"x" in text`` is a
memchr. So:

- secrets are gated by substring tests (``"bearer"``, ``"key"``, ``"sk-"``, ``"AKIA"``... on the text
  or its lower-cased copy) and then matched *at* the keyword with anchored regexes, never by a scan;
- e-mail addresses are found from each ``@`` outward, with anchored matches; credentials in URLs from
  each ``://``;
- the numeric detectors (IBAN, card, phone) share one cheap scan for candidate regions (a run of 8+
  digits/capitals/separators, skipped over in one go), and the precise regex runs only inside those
  (lower-case IBANs are looked for only around those runs);
- a regex candidate is only a candidate: cards must pass Luhn and start with an issuer digit 2-6, IBANs
  mod-97 with the country's length, phones need 8-15 digits and a phone shape (``+CC``, a leading 0 with
  separated groups, or the North American ``(415) 555-0132`` / ``415-555-0132`` / ``415 555 0132``).
  That is what keeps ISO timestamps, ids, token counts, versions, prices and order numbers out;
- encoded text (``%40``, ``&#64;``, ``\\u0040``, quoted-printable ``=40`` and soft line breaks,
  full-width forms, the small ``﹫``, other scripts' digits, no-break spaces, invisible format characters
  such as zero-width spaces and soft hyphens, which the view drops) is decoded into a view only where
  such escapes occur (each kind gated by a substring test), and the view is scanned only around them;
- credential query parameters (``?sig=``, ``&code=``...) are found from each ``?``/``&``, PEM private
  keys and Slack webhook paths behind a substring test.

Known limits (the README's Privacy section lists them all, with the reasons): bare national numbers
without separators (``017612345678``), numbers without a trunk 0 or ``+CC``, base64, quoted local
parts, and personal names are not detected; use level ``hide`` when free text must not leave the
process at all.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import html.entities
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from otel_basic.masking.secret_names import NAME_NEEDLES, is_secret_name

__all__ = [
    "BUILTIN_DETECTORS",
    "IBAN_LENGTHS",
    "Detector",
    "Hit",
    "Scanner",
    "iban_valid",
    "luhn_valid",
]

Hit = tuple[int, int, str, str]
"""``(start, end, label, normalized)``: where the value is, its token label and the value to hash."""

BUILTIN_DETECTORS: tuple[str, ...] = (
    "url_credentials",
    "bearer",
    "api_key",
    "assignment",
    "email",
    "iban",
    "card",
    "phone",
)
"""Names of the built-in detectors (all enabled by default), in priority order for overlapping hits."""

_LABELS = {
    "url_credentials": "secret",
    "bearer": "token",
    "api_key": "secret",
    "assignment": "secret",
    "email": "email",
    "iban": "iban",
    "card": "card",
    "phone": "phone",
}


@dataclass(frozen=True)
class Detector:
    """A user-defined detector: every match of ``pattern`` becomes ``<label:hash>``.

    ``find`` may validate a match and return ``(start, end, normalized)`` for the part to replace (or
    ``None`` to keep the match); ``precheck`` is a fast test that lets strings skip the regex.
    """

    label: str
    pattern: re.Pattern[str]
    find: Callable[[re.Match[str]], tuple[int, int, str] | None] | None = None
    precheck: Callable[[str], bool] | None = None


# --- validators -------------------------------------------------------------------------------------------


_LUHN_DOUBLE = {str(d): (d * 2 - 9 if d > 4 else d * 2) for d in range(10)}


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a string of ASCII digits (separators must be removed first)."""
    if not digits.isdigit() or not digits.isascii():
        return False
    # map() keeps the loop in C: this runs for every card-shaped candidate.
    total = sum(map(int, digits[-1::-2])) + sum(map(_LUHN_DOUBLE.__getitem__, digits[-2::-2]))
    return total % 10 == 0


# Official IBAN lengths (SWIFT registry). Knowing the length lets trailing upper-case words swallowed by
# the regex ("... 0130 00 FOR ...") be cut off before the mod-97 check.
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


_IBAN_LETTERS = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)})


def iban_valid(compact: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN written without spaces (letters count as 10..35)."""
    if len(compact) < 5 or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = (compact[4:] + compact[:4]).upper().translate(_IBAN_LETTERS)
    return int(rearranged) % 97 == 1


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


# --- numeric detectors: one pass -------------------------------------------------------------------
# Only run inside candidate regions (below), so it needs no fast-skip prefix. It starts with the one check
# every kind shares, "not right after a letter, digit, _ or +", which rejects positions inside a number
# at once; then one alternative per shape, each with its own extra boundary checks. One capturing group
# per alternative: ``m.lastindex`` says which kind matched.
_NUM = re.compile(
    r"(?<![\w+])(?:"
    # international: +CC then up to 6 groups, one separator between groups
    r"\+([1-9][0-9]{0,3}(?:[ .-]?(?:\([0-9]{1,5}\)|[0-9]{1,5})){1,6})(?![\w]|[.,][0-9])"
    # North American with parentheses: (415) 555-0132
    r"|\(([0-9]{3}\) ?[0-9]{3}[ .-][0-9]{4})(?![\w]|[.,-][0-9])"
    # IBAN: country code, check digits, BBAN (validated by country length and mod-97)
    r"|([A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]){11,30})(?![A-Za-z0-9])"
    # national with trunk 0 and separated groups: 0176 12345678, 030/901820, 03-1234-5678; the area code in
    # parentheses, (020) 7946 0958, (02) 1234 5678; French dotted pairs, 01.23.45.67.89
    r"|(?<!\.)(0[0-9]{1,4}(?:[ /-][0-9]{2,8}){1,4}|\(0[0-9]{1,4}\) ?[0-9]{2,8}(?:[ -][0-9]{2,8}){0,3}"
    r"|0[1-9](?:\.[0-9]{2}){4})(?![\w/]|[.,:][0-9])"
    # card: issuer digit 2-6 (epoch timestamps start with 1), 13-19 digits, single space/dash; or dotted
    # in groups of four (4111.1111.1111.1111) or 4-6-5 (Amex), never a free-form decimal
    r"|(?<!\.)([2-6][0-9]{3}(?:[ -]?[0-9]){9,15}|[2-6][0-9]{3}(?:\.[0-9]{4}){3}|[2-6][0-9]{3}(?: - [0-9]{4}){3}"
    r"|3[0-9]{3}\.[0-9]{6}\.[0-9]{5})"
    r"(?!\w)"  # "-12/25" or ".5" may follow: the longest Luhn-valid prefix is the card (_numeric_hit)
    # North American: 415-555-0132, 415.555.0132, and with spaces 415 555 0132 (area code and exchange
    # 2-9, as the numbering plan requires: "100 200 3000" is not a phone number)
    r"|(?<![./:])([0-9]{3}[.-][0-9]{3}[ .-][0-9]{4}|[2-9][0-9]{2} [2-9][0-9]{2}[ -][0-9]{4})(?![\w]|[.,-][0-9])"
    r")",
    re.ASCII,
)
_NUM_KINDS = ("", "intl", "nanp", "iban", "national", "card", "nanp")
# Candidate regions: a run of 8+ characters that could belong to a phone, card or IBAN. Finding these is one
# cheap scan that jumps over each run at once; the precise regex then only runs inside them.
_NUM_CANDIDATE = re.compile(r"[0-9+(][0-9A-Z ()./+-]{7,}", re.ASCII)
_DIGITS = re.compile(r"[0-9]+")


def _iban_hit(text: str, m: re.Match[str]) -> Hit | None:
    return _iban_at(m.start(), m.group(), strict=False)


def _iban_at(start: int, body: str, *, strict: bool) -> Hit | None:
    """An IBAN at the start of ``body`` (written from ``start``): cut to its country's length and
    mod-97-checked. ``strict`` (lower-case candidates) also requires a known country code, so a hex
    hash that happens to start with two letters and two digits is not taken for an IBAN."""
    body = body.upper().replace("-", " ")  # DE89-3704-...: dashes group it like spaces
    expected = IBAN_LENGTHS.get(body[:2])
    if expected is None:
        if strict:
            return None
        compact = body.replace(" ", "")
        end = start + len(body)
        return (start, end, "iban", compact) if 15 <= len(compact) <= 34 and iban_valid(compact) else None
    # The end of the ``expected``-th non-space character: a fixed point of end = expected + spaces before it.
    end = expected
    while end <= len(body) and end != expected + body.count(" ", 0, end):
        end = expected + body.count(" ", 0, end)
    if end > len(body) or (end < len(body) and body[end] != " "):
        return None
    compact = body[:end].replace(" ", "")
    return (start, start + end, "iban", compact) if iban_valid(compact) else None


# What may follow each kind (its look-ahead in _NUM): where a shorter prefix of a match may end.
_NUM_AFTER = {
    "card": re.compile(r"(?!\w)", re.ASCII),  # a Luhn-valid prefix is a card even before "-12/25"
    "intl": re.compile(r"(?![\w]|[.,][0-9])", re.ASCII),
    "national": re.compile(r"(?![\w/]|[.,:][0-9])", re.ASCII),
}


def _numeric_hit(text: str, m: re.Match[str]) -> Hit | None:
    """The match as a phone, card or IBAN; or its longest prefix that is one.

    The match is greedy: a card followed by its expiry ("4111 1111 1111 1111 12/25") matches 18 digits, a
    phone followed by a date ("+44 20 7946 0958 2024-06-03") 20; neither checks as a whole. So a match
    that does not is cut back group by group, at a separator where the kind's look-ahead allows an end.
    """
    kind = _NUM_KINDS[m.lastindex or 0]
    if kind == "iban":
        return _iban_hit(text, m)
    value = m.group()
    after = _NUM_AFTER.get(kind)
    end = len(value)
    while True:
        found = _numeric_value(kind, value[:end])
        if found is not None:
            return m.start(), m.start() + end, found[0], found[1]
        if after is None:
            return None
        while True:  # the previous end of a group that the kind's look-ahead accepts
            end -= 1
            while end > 0 and not value[end - 1].isdigit():
                end -= 1
            if end <= 0:
                return None
            if value[end] in " -./" and after.match(text, m.start() + end):
                break


def _numeric_value(kind: str, value: str) -> tuple[str, str] | None:
    if kind == "card":
        digits = value.replace(" ", "").replace("-", "").replace(".", "")
        return ("card", digits) if 13 <= len(digits) <= 19 and luhn_valid(digits) else None
    groups = _DIGITS.findall(value)
    digits = "".join(groups)
    if kind == "intl":
        if not 8 <= len(digits) <= 15:
            return None
        if len(groups) == 2 and value[len(groups[0]) + 1] in ".,":
            return None  # "+1234.56" is an amount
        return "phone", "+" + digits
    if kind == "national":
        if not 9 <= len(digits) <= 12:
            return None
        french = len(groups) == 5 and all(len(g) == 2 for g in groups)  # 06 12 34 56 78
        if len(groups[0]) <= 2 and len(groups[1]) < 3 and not french:
            return None  # "01-02-2024" is a date, not an area code
    return "phone", digits


# --- e-mail: anchored on each "@" -------------------------------------------------------------------------
_LOCAL_REVERSED = re.compile(r"[\w.%+-]{1,64}")
# A domain name with a TLD, an address literal (judy@[10.1.2.3], x@[IPv6:fd00::1]) or localhost.
_DOMAIN = re.compile(r"(?:[\w-]+\.)+[^\W\d_]{2,}|\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]|localhost(?![\w.-])")
# A single-label host (mallory@intranet) counts only where the text says it is an address: inside
# <...> or after "mailto:". Elsewhere "name@label" is too often a package pin or a handle (react@latest).
_SINGLE_LABEL = re.compile(r"[A-Za-z0-9-]{1,63}")


def _email_hits(text: str) -> list[Hit]:
    hits: list[Hit] = []
    at = text.find("@", 1)
    while at > 0:
        window = text[max(0, at - 64) : at][::-1]
        local = _LOCAL_REVERSED.match(window)
        dom = _DOMAIN.match(text, at + 1) if local else None
        end = dom.end() if dom else -1
        if local and dom is None:
            start = at - local.end()
            single = _SINGLE_LABEL.match(text, at + 1)
            if single and (
                (text[start - 1 : start] == "<" and text[single.end() : single.end() + 1] == ">")
                or text[max(0, start - 7) : start].lower() == "mailto:"
            ):
                end = single.end()
        if local and end > 0:
            start = at - local.end()
            while text[start] == ".":  # ".ada@x.org": the dot is punctuation
                start += 1
            if start < at:
                hits.append((start, end, "email", text[start:end].lower()))
            at = text.find("@", end)
        else:
            at = text.find("@", at + 1)
    return hits


# --- credentials in URLs: scheme://user:password@host -------------------------------------------------------
_AUTHORITY = re.compile(r"[^\s/?#\\\"'<>]*")


def _url_credential_hits(text: str) -> list[Hit]:
    """The userinfo of every URL (``user:password`` in ``https://user:password@host/``), whole.

    The authority ends at the first ``/``, ``?`` or ``#``; the userinfo ends at its *last* ``@`` (a
    password may hold an unencoded ``@``). A user name alone is masked too: it is often a token
    (``https://ghp_...@github.com``).
    """
    hits: list[Hit] = []
    p = text.find("://")
    while p >= 0:
        start = p + 3
        auth = _AUTHORITY.match(text, start)
        end = auth.end() if auth else start
        at = text.rfind("@", start, end)
        if at > start:
            hits.append((start, at, "secret", text[start:at]))
        p = text.find("://", max(end, start))
    return hits


# --- secrets ----------------------------------------------------------------------------------------------
# Keyword-anchored: find the keyword with str.find on a lower-cased copy, then match the value right
# after it. No scan of the whole text with a case-insensitive regex.
_TOKEN_CHARS = re.compile(r"[0-9._~+/=-]")
_HAS_DIGIT = re.compile(r"[0-9]")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_OWN_TOKEN_REST = re.compile(r":[0-9a-f]{4,64}>")  # after "<secret" or "<token": a masker's token (4-64 hex)
_AUTH_VALUE = re.compile(r"(?:[ \t\xa0]|\+(?=[A-Za-z0-9]))+([A-Za-z0-9._~+/=-]{8,})")  # no-break space; + in a query
_ASSIGN_SEP = re.compile(r"[\"']?[ \t]*([=:])(?!=)[ \t]*[\"']?")
_ASSIGN_RUN = re.compile(r"[^\s\"'&,;<>\\]++")  # no backslash: a value ends before an escaped quote (\")
_IDENT_CHAR = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_KEY_PREFIXES = ("api", "access", "secret", "private", "client", "auth", "refresh", "app", "session", "id")
_PASSWORD_WORDS = ("password", "passwd", "pwd")
_ASSIGN_WORDS = ("key", "token", "secret", *_PASSWORD_WORDS)
_AUTH_WORDS = ("bearer", "basic")
# Pre-checks run on the lower-cased text: one cheap substring test per keyword stem.
_AUTH_NEEDLES = ("bearer", "basic")
_SECRET_WORDS = (*NAME_NEEDLES, "auth")  # the masker's cue that a JSON document may name a secret
# A secret name's value in data written as text: after "=" or ":" (or a pair's ","), quoted (to its closing
# quote, escapes read; a value the text's cut ends inside is masked to the end) or bare (_BARE_RUN).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_NAMED_SEP = re.compile(r"""(\\?["']?)[ \t]*([=:])(?!=)[ \t]*""")  # not ==, :=; \' of a repr in a repr
# A quoted value, to its closing quote (or the text's end: a cut text). One without a letter or digit is
# what follows a string that ends in a name ("set password=", "user": ...; input('Password: ')): not one.
_QUOTED_VALUE = re.compile(
    r"""[bBrRuUfF]{0,2}(?:"((?:[^"\\\n]|\\.)+)|'((?:[^'\\\n]|\\.)+)"""
    # \"...\" inside a JSON string: its own escapes escaped once more (\\\" a quote, \\\\ a backslash)
    r"""|\\"((?:[^"\\\n]|\\\\\\"|\\\\\\\\|\\[^"n\n])+)"""
    r"""|\\'((?:[^'\\\n]|\\[^'\n])+))"""  # \'...\' : a repr inside a repr ('{\'password\': \'x\'}')
)
_BARE_RUN = re.compile(r"""[^\s"'&,;<>()\[\]{}\\]++""")
# A pair in a tuple's or a list's repr, or in JSON: ('password', 'hunter2'), (b'x-api-key', b'abc123')
# (ASGI headers), [["Authorization", "Token abc"]].
_PAIR_VALUE = re.compile(
    r"""(["']),[ \t]*[bBrRuUfF]{0,2}"""
    r"""(?:'((?:[^'\\\n]|\\.)+)(?:'[ \t]*[)\]]|'?\Z)|"((?:[^"\\\n]|\\.)+)(?:"[ \t]*[)\]]|"?\Z))"""  # or cut
)
_CLOSING = {")": "(", "]": "[", "}": "{"}
_INPUT_VALUE = "input_value"
_NOT_VALUES = frozenset(("None", "null", "nil", "undefined", "true", "false", "True", "False"))
_NOT_VALUE_CHARS = max(map(len, _NOT_VALUES))
_CALL = re.compile(r"[A-Za-z_][\w.]*\(")
_HAS_ALNUM = re.compile(r"[^\W_]")
OWN_TOKEN = re.compile(r"<[a-z_]+:[0-9a-f]{4,64}>")
"""A masker's token (``<secret:1f0c...>``): masked before, so never masked again."""


def _auth_hit(text: str, cred_match: re.Match[str], scheme: str) -> Hit | None:
    cred = cred_match.group(1)
    if scheme == "basic":
        # Real Basic credentials decode to "user:password"; "basic information" does not.
        try:
            decoded = base64.b64decode(cred + "=" * (-len(cred) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
        if b":" not in decoded:
            return None
    elif (
        _TOKEN_CHARS.search(cred) is None
        and not _mixed_case(cred)
        and not _after_authorization(text, cred_match.start() - len(scheme))
    ):
        # "bearer instruments" is prose; a token of letters alone is one if it mixes cases like random
        # text (AbCdEfGhIjKlMnOp), or if an Authorization header names it (found by a hostile review)
        return None
    return cred_match.start(1), cred_match.end(1), "token", cred


def _mixed_case(cred: str) -> bool:
    """Letters that look random: 16 or more, at least two upper- and two lower-case ones."""
    if len(cred) < 16:
        return False
    upper = sum(1 for c in cred if c.isupper())
    return upper >= 2 and len(cred) - upper >= 2


def _after_authorization(text: str, scheme_start: int) -> bool:
    """Is the scheme (``Bearer``) the value of an Authorization header, field or member (the name within
    the 40 characters before it: ``Authorization: Bearer``, ``"authorization": "Bearer``)?"""
    return "authorization" in text[max(0, scheme_start - 40) : scheme_start].lower()


def _assignment_value_hit(word: str, text: str, start: int, end: int, assigned: bool) -> Hit | None:
    end = _without_closing_brackets(text, start, end)
    if end - start <= _NOT_VALUE_CHARS and text[start:end] in _NOT_VALUES:
        return None  # password=None, 'token': True: no value
    if _CALL.match(text, start, end):
        return None  # password = getpass(), secret=SecretStr('**********'): code, not a value
    if word in _PASSWORD_WORDS or (word != "key" and assigned):
        # password at any length; token=/secret= too (an "=" says assignment; "secret: the..." is prose)
        if end - start < 4:
            return None
    else:
        # "key: internationalization" is prose; a key is long, random, letters and digits. Judged on its
        # first 256 characters: many keywords in one long run each read it to its end (quadratic)
        head = text[start : min(end, start + 256)]
        if len(head) < 16 or _HAS_DIGIT.search(head) is None or _HAS_LETTER.search(head) is None:
            return None
        if _entropy(head) < 3.0:
            return None
    return start, end, "secret", text[start:end]


def _without_closing_brackets(text: str, start: int, end: int) -> int:
    """The end of a bare value without the closing brackets it has no opening one for: a repr's
    ``Login(token=False)`` or ``{'pin': 12345}``, whose value is ``False`` / ``12345``, not ``False)``."""
    while end > start and (close := text[end - 1]) in _CLOSING and text.count(_CLOSING[close], start, end) < text.count(
        close, start, end
    ):
        end -= 1
    return end


class _RunEnds:
    """Where the run of a character class that starts at a position ends: starts inside the run found
    last share its end, so n keywords in one long run cost one scan of it, not n (a review's 16 KB of
    ``token=`` repeated took 0.6 s, growing with the square of the length)."""

    __slots__ = ("_end", "_run", "_start", "_text")

    def __init__(self, text: str, run: re.Pattern[str]) -> None:
        self._text, self._run, self._start, self._end = text, run, 0, 0

    def end(self, start: int) -> int:
        if not self._start <= start < self._end:
            m = self._run.match(self._text, start)
            self._start, self._end = start, m.end() if m else start
        return self._end


def _ends_identifier(text: str, start: int, end: int) -> bool:
    """Is text[start:end] the last word of an identifier (``api_key``, ``apiKey``, ``Token``) and not
    the tail of an ordinary word (``monkey``)?"""
    if end < len(text) and text[end] in _IDENT_CHAR:
        return False
    if start == 0 or text[start - 1] not in _LOWER or text[start] not in _LOWER:
        return True
    ident = start
    while ident > 0 and text[ident - 1] in _IDENT_CHAR:
        ident -= 1
    return text[ident:start].lower().endswith(_KEY_PREFIXES)


def _keyword_hits(text: str, lower: str, auth: bool, assign: bool) -> list[Hit]:
    hits: list[Hit] = []
    if auth:
        for word in _AUTH_WORDS:
            p = lower.find(word)
            while p >= 0:
                end = p + len(word)
                if p == 0 or text[p - 1] not in _IDENT_CHAR:
                    m = _AUTH_VALUE.match(text, end)
                    if m and (hit := _auth_hit(text, m, word)):
                        hits.append(hit)
                p = lower.find(word, end)
    if assign and ("=" in text or ":" in text):  # a text with only commas may hold pairs, not assignments
        runs = _RunEnds(text, _ASSIGN_RUN)
        for word in _ASSIGN_WORDS:
            p = lower.find(word)
            while p >= 0:
                end = p + len(word)
                if p and text[p - 1] == "<" and _OWN_TOKEN_REST.match(text, end):
                    pass  # our own token (<secret:1f0c...>), masked before: its hash is not a secret
                elif _ends_identifier(text, p, end) and (sep := _ASSIGN_SEP.match(text, end)):
                    value_end = runs.end(sep.end())
                    if value_end > sep.end() and (
                        hit := _assignment_value_hit(word, text, sep.end(), value_end, sep.group(1) == "=")
                    ):
                        hits.append(hit)
                        end = hit[1]  # a keyword inside the value masked is masked with it
                p = lower.find(word, end)
    if assign:
        hits.extend(_named_value_hits(text, lower))
        if "input_value=" in text:
            hits.extend(_validation_input_hits(text))
    return hits


def _named_value_hits(text: str, lower: str) -> list[Hit]:
    """The value of every secret name (:func:`is_secret_name`: ``passphrase``, ``api.key``,
    ``clientCredential``...) written as data: ``'passphrase': 'correct horse'`` (a Python repr),
    ``Login(api_key="ab12")`` (a pydantic repr), ``pin_password=1234``, ``('password', 'x')`` (a pair),
    ``password: \\"x\\"`` (inside a JSON string). Data, not prose: the value is quoted, or the name is,
    or an ``=`` assigns it; ``token: the next one`` is left to the keyword rules, ``token == x`` and
    ``key=os.getenv(...)`` (a call) are code. Each name is found from a needle (:data:`NAME_NEEDLES`),
    then read whole."""
    found: list[tuple[int, Hit]] = []  # each with where its name starts
    n = len(text)
    judged: set[int] = set()
    runs = _RunEnds(text, _BARE_RUN)
    for needle in NAME_NEEDLES:
        p = lower.find(needle)
        while p >= 0:
            start, end = p, p + len(needle)
            while start > 0 and text[start - 1] in _NAME_CHARS:
                start -= 1
            while end < n and text[end] in _NAME_CHARS:
                end += 1
            while end > p + len(needle) and text[end - 1] in ".-":  # "the password." ends a sentence
                end -= 1
            if end not in judged:
                judged.add(end)
                if is_secret_name(text[start:end]) and (hit := _named_value_hit(text, start, end, runs)):
                    found.append((start, hit))
                    end = hit[1]  # a name inside the value masked is masked with it
            p = lower.find(needle, max(end, p + 1))
    if len(found) < 2:
        return [hit for _, hit in found]
    # A name inside another's value is part of that value (another needle's pass found it): its own
    # "value" would start inside or after the other one's and cut through the text's quotes.
    found.sort(key=lambda f: f[1][0])
    starts = [hit[0] for _, hit in found]
    reach = list(itertools.accumulate((hit[1] for _, hit in found), max))
    hits: list[Hit] = []
    for name_at, hit in found:
        k = bisect.bisect_right(starts, name_at) - 1
        if k < 0 or reach[k] <= name_at:
            hits.append(hit)
    return hits


def _validation_input_hits(text: str) -> list[Hit]:
    """pydantic's ``ValidationError`` text shows each refused input under its field's name, on the line
    above (``password\\n  String should have at least 12 characters [type=string_too_short,
    input_value='hunter2', input_type=str]``): an exception message a span records. The input of a
    field whose name (the last part of ``creds.password``) says secret is masked."""
    hits: list[Hit] = []
    runs = _RunEnds(text, _BARE_RUN)
    p = text.find(_INPUT_VALUE)
    while p >= 0:
        line = _line_start(text, p)
        if line > 0:
            loc = text[_line_start(text, line - 1) : line].strip()
            if loc.endswith("\\n"):  # the line break before the message, escaped ("\\n" in JSON)
                loc = loc[:-2]
            loc = loc.strip("\\ \t")
            if loc and is_secret_name(loc.rpartition(".")[2]):
                hit = _named_value_hit(text, p, p + len(_INPUT_VALUE), runs)
                if hit is not None:
                    hits.append(hit)
        p = text.find(_INPUT_VALUE, p + len(_INPUT_VALUE))
    return hits


def _line_start(text: str, pos: int) -> int:
    """Where the line holding ``pos`` starts: after a newline, or after an escaped one (``\\n`` in a JSON
    string, where the message is an exception's inside a document; ``\\ `` in the masker's scan of raw
    JSON, which blanks the escape's letter so that no detector reads it as one)."""
    start = text.rfind("\n", 0, pos) + 1
    for escaped in ("\\n", "\\ "):
        at = text.rfind(escaped, start, pos)
        if at >= 0:
            start = at + 2
    return start


def _named_value_hit(text: str, start: int, end: int, runs: _RunEnds) -> Hit | None:
    sep = _NAMED_SEP.match(text, end)
    if sep is None:
        before = start - 2 - (start >= 2 and text[start - 2] in "bB")  # the "(" of ('password', ...)
        if before >= 0 and text[start - 1] in "'\"" and text[before] in "([":
            pair = _PAIR_VALUE.match(text, end)
            if pair is not None:
                group = 2 if pair.group(2) is not None else 3
                return pair.start(group), pair.end(group), "secret", pair.group(group)
        return None
    at = sep.end()
    quoted = _QUOTED_VALUE.match(text, at)
    if quoted is not None:
        group = next(g for g in (1, 2, 3, 4) if quoted.group(g) is not None)
        value_start, value_end = quoted.start(group), quoted.end(group)
    else:
        if sep.group(2) == ":" and sep.group(1) != "'":
            # password: hunter2 is the keyword rules' (prose: "token: the next one"); "pin": 1234 the JSON
            # paths', which keep the document valid (the token in quotes)
            return None
        value_start, value_end = at, runs.end(at)
        if value_end < len(text) and text[value_end] == "(":
            return None  # a call (api_key=os.getenv(...), SecretStr(...)): code, not a value
        value_end = _without_closing_brackets(text, value_start, value_end)
    value = text[value_start:value_end]
    if value in _NOT_VALUES or OWN_TOKEN.fullmatch(value) or _HAS_ALNUM.search(value) is None:
        return None
    return value_start, value_end, "secret", value


# Query parameters that carry a credential (signed URLs, OAuth redirects): their value is masked at any
# length, found from each "?" or "&" with an anchored match.
_QUERY_NAME = re.compile(r"([A-Za-z][A-Za-z0-9_.-]{0,39})=")
_QUERY_VALUE = re.compile(r"[^&#\s\"'<>\\]++")
_SECRET_PARAMS = frozenset(
    ("sig", "signature", "code", "session", "sessionid", "session_id", "sid", "auth", "authorization", "pass",
     "password", "passwd",
     "pwd", "token", "secret", "key", "apikey", "api_key", "api-key", "access_token", "refresh_token", "id_token",
     "client_secret", "credential", "credentials", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
     "x-goog-signature", "x-goog-credential")
)  # fmt: skip
_SECRET_PARAM_ENDS = ("token", "secret", "signature", "password", "_key", "-key")


def _query_param_hits(text: str) -> list[Hit]:
    hits: list[Hit] = []
    runs = _RunEnds(text, _QUERY_VALUE)
    for sep in ("?", "&"):
        p = text.find(sep)
        while p >= 0:
            m = _QUERY_NAME.match(text, p + 1)
            if m is not None:
                name = m.group(1).lower()
                if name in _SECRET_PARAMS or name.endswith(_SECRET_PARAM_ENDS):
                    value_end = runs.end(m.end())
                    if value_end > m.end():
                        hits.append((m.end(), value_end, "secret", text[m.end() : value_end]))
                        p = value_end - 1  # a parameter inside the value masked is masked with it
            p = text.find(sep, p + 1)
    return hits


# PEM private keys: the body between the BEGIN and END lines (to the end of the text when cut).
_PEM_BODY = re.compile(r"-----BEGIN ([A-Z0-9 ]{0,40})PRIVATE KEY-----(.+?)(?=-----END |\Z)", re.DOTALL)


def _pem_hits(text: str) -> list[Hit]:
    return [(m.start(2), m.end(2), "secret", m.group(2)) for m in _PEM_BODY.finditer(text)]


_API_KEY = re.compile(
    r"(?:"
    r"sk-(?:lf-|proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic, Langfuse secret key
    r"|pk-lf-[A-Za-z0-9-]{8,}"  # Langfuse public key
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|xox[abeprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}"  # Stripe
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r"|T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"  # Slack incoming-webhook path (hooks.slack.com/services/)
    r")"
)
# Where a key can start: a substring (found with str.find) or a regex with a literal prefix (which ``re``
# finds as fast as str.find), and the offset of that anchor from the start of the key.
_KEY_ANCHORS: tuple[tuple[str | re.Pattern[str], int], ...] = (
    ("sk-", 0),
    ("pk-lf-", 0),
    ("xox", 0),
    ("eyJ", 0),
    ("whsec_", 0),
    (re.compile(r"gh(?:[pousr]_|ithub_pat_)"), 0),
    (re.compile(r"A(?:KIA|SIA|Iza)"), 0),
    (re.compile(r"_(?:live|test)_"), 2),
    ("hooks.slack.com/services/", -len("hooks.slack.com/services/")),
)
_KEY_BOUNDARY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _may_hold_api_key(t: str) -> bool:
    # Inline substring tests, single (memchr-fast) characters first: ~4x cheaper than running the anchors.
    return (
        ("-" in t and ("sk-" in t or "pk-lf-" in t or "xox" in t))
        or ("_" in t and ("gh" in t or "_live_" in t or "_test_" in t or "whsec_" in t))
        or ("A" in t and ("AKIA" in t or "ASIA" in t or "AIza" in t))
        or ("J" in t and "eyJ" in t)
    )


def _api_key_hits(text: str) -> list[Hit]:
    hits: list[Hit] = []
    for anchor, offset in _KEY_ANCHORS:
        if isinstance(anchor, str):
            starts: list[int] = []
            p = text.find(anchor)
            while p >= 0:
                starts.append(p)
                p = text.find(anchor, p + 1)
        else:
            starts = [m.start() for m in anchor.finditer(text)]
        for p in starts:
            start = p - offset
            if start >= 0 and (start == 0 or text[start - 1] not in _KEY_BOUNDARY):
                m = _API_KEY.match(text, start)
                if m:
                    hits.append((start, m.end(), "secret", m.group()))
    return hits


# --- encoded text: a decoded view ---------------------------------------------------------------------------
# "eve%40example.com", "frank&#64;example.com", "&commat;", "\\u0040", full-width "＠" and non-ASCII
# digits hide a value from detectors that read ASCII. The scanner also reads a decoded view of such text
# (only around what was decoded) and maps each hit back to the original characters, so the whole encoded
# form is replaced. Each kind is gated by a substring test and found by a regex with a literal first
# character, so text without escapes pays almost nothing.
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# One or more backslashes: "\\\\u0040" is "\\u0040" escaped again (a repr, JSON inside JSON).
_BACKSLASH = re.compile(r"\\+u[0-9A-Fa-f]{4}|\\+x[0-9A-Fa-f]{2}")
# Quoted-printable (MIME bodies, encoded words "=?utf-8?q?x=40example.org?="): only "=40", the "@", and
# the soft line break "=\n" (a long line wrapped inside an address), which stands for nothing, also as
# written in a repr or JSON ("=\\n").
_QP = re.compile(r"=40|=\r?\n|=(?:\\r)?\\n")
_ESCAPES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("%",), _PERCENT),
    (("=40", "=\n", "=\r", "=\\n", "=\\r"), _QP),
    (("&",), _ENTITY),
    (("\\u", "\\x"), _BACKSLASH),
)
# Non-ASCII characters that stand for ASCII ones a detector reads: full-width forms (＠, ４), Unicode spaces
# (no-break, thin, narrow no-break: phone groups), and the decimal digits of the most used other scripts
# (Arabic-Indic, Extended Arabic-Indic, Devanagari, Bengali, Thai). One character class: one fast scan.
# Invisible format characters (soft hyphen, zero-width space/joiners, bidi marks and overrides such as
# RLO, word joiner, BOM) are dropped from the view: "le\u200bak@example.org" reads as one address. The
# small commercial at "\ufe6b" reads as "@".
_NON_ASCII_LOOKALIKE = re.compile(
    "[\uff01-\uff5e\u00a0\u2000-\u200a\u202f\u205f\u3000"
    "\u0660-\u0669\u06f0-\u06f9\u0966-\u096f\u09e6-\u09ef\u0e50-\u0e59"
    "\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufe6b]"
)


def _fold(c: str) -> str:
    if "\uff01" <= c <= "\uff5e":
        return chr(ord(c) - 0xFEE0)
    if c == "\ufe6b":
        return "@"
    if c.isspace():
        return " "
    if unicodedata.category(c) == "Cf":
        return ""
    return str(unicodedata.decimal(c))


_VIEW_MARGIN = 400
"""How far around a decoded character a value containing it can reach (local part + domain, IBAN...)."""


def _decode_one(token: str, letters: bool) -> str | None:
    """The character(s) an escape stands for, or ``None`` when it does not matter to any detector.
    Non-ASCII letters (``\\u00e9``) matter only to addresses, so only when ``letters`` (an "@" is near)."""
    head = token[0]
    if head == "=":
        return "@" if token == "=40" else ""  # quoted-printable "=40", soft line break
    if head == "%" or head == "\\":
        decoded = chr(int(token[1:] if head == "%" else token.lstrip("\\")[1:], 16))
    elif token.startswith("&#"):
        code = int(token[3:-1], 16) if token[2] in "xX" else int(token[2:-1])
        if not 0 < code < 0x110000 or 0xD800 <= code < 0xE000:
            return None
        decoded = chr(code)
    else:
        decoded = html.entities.html5.get(token[1:], "")
    if decoded.isspace():
        return " "  # &nbsp; between the groups of a phone number
    if decoded == "\ufe6b" or (len(decoded) == 1 and unicodedata.category(decoded) == "Cf"):
        return _fold(decoded)  # "\\u200b", "&shy;": an invisible character inside a value, "﹫"
    # "&amp;", "&lt;" and the like change nothing a detector reads: no second look for them.
    if not decoded or not (decoded.isalnum() or decoded in _VIEW_RELEVANT):
        return None
    return decoded if letters or decoded.isascii() or decoded.isdecimal() else None


_VIEW_RELEVANT = frozenset("@.+-_:/()[] \t\n%=")


_QP_NEXT = frozenset(("40", "\r\n", "\\n", "\\r"))


def has_quoted_printable(text: str, escaped_break_only: bool = False) -> bool:
    """Is there a quoted-printable ``=40`` or soft line break (``=`` + newline, raw or as ``\\n``)? One
    ``str.find`` per "=" (memchr-fast), not one substring search per form."""
    p = text.find("=")
    while p >= 0:
        nxt = text[p + 1 : p + 3]
        if escaped_break_only:
            # "=\\n", or escaped again ("=\\\\n": a repr inside JSON); not "href=\\"..."
            if nxt[:1] == "\\" and text[p + 1 : p + 9].lstrip("\\")[:1] in ("n", "r"):
                return True
        elif nxt in _QP_NEXT or nxt[:1] == "\n":
            return True
        p = text.find("=", p + 1)
    return False


def _may_be_encoded(text: str) -> bool:
    return (
        "%" in text
        or "&" in text
        or "\\u" in text
        or "\\x" in text
        or ("=" in text and has_quoted_printable(text))
        or not text.isascii()
    )


Piece = tuple[int, int, str]
"""``(start, end, decoded)``: ``text[start:end]`` stands for ``decoded``."""


def _pieces(text: str) -> list[Piece]:
    pieces: list[Piece] = []
    at = "@" in text
    for needles, pattern in _ESCAPES:
        if any(n in text for n in needles):
            pieces.extend(
                (m.start(), m.end(), d) for m in pattern.finditer(text) if (d := _decode_one(m.group(), at)) is not None
            )
    if not text.isascii():
        pieces.extend((m.start(), m.end(), _fold(m.group())) for m in _NON_ASCII_LOOKALIKE.finditer(text))
    pieces.sort()
    return pieces


def decoded_view(text: str) -> tuple[str, list[int], Callable[[int, int], tuple[int, int]]] | None:
    """``(view, decoded_at, to_original)``: the text with URL/HTML/JSON escapes decoded and full-width
    forms and non-ASCII digits folded to ASCII; where in the view each decoded piece starts; and
    ``to_original(start, end)``, which maps a span of the view back to the span of the original it came
    from. ``None`` when nothing relevant is encoded."""
    pieces = _pieces(text)
    if not pieces:
        return None
    out: list[str] = []
    view_starts: list[int] = []  # where each piece starts in the view
    pos = 0
    vpos = 0
    kept: list[Piece] = []
    for start, end, decoded in pieces:
        if start < pos:
            continue  # overlapping escapes: keep the first
        out.append(text[pos:start])
        vpos += start - pos
        view_starts.append(vpos)
        kept.append((start, end, decoded))
        out.append(decoded)
        vpos += len(decoded)
        pos = end
    out.append(text[pos:])
    view = "".join(out)

    def original(i: int, *, end: bool) -> int:
        k = bisect.bisect_right(view_starts, i) - 1
        if k < 0:
            return i
        start, stop, decoded = kept[k]
        inside = i - view_starts[k]
        if inside < len(decoded) or (end and inside == len(decoded)):
            return stop if end and inside > 0 else start
        return stop + inside - len(decoded)

    def to_original(start: int, end: int) -> tuple[int, int]:
        return original(start, end=False), original(end, end=True)

    return view, view_starts, to_original


def _view_windows(view_len: int, starts: list[int], margin: int) -> list[tuple[int, int]]:
    """Merged windows of ``margin`` characters around each decoded position of the view."""
    windows: list[tuple[int, int]] = []
    for s in starts:
        lo, hi = max(0, s - margin), min(view_len, s + margin)
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
    return windows


# --- the scanner ------------------------------------------------------------------------------------------


class Scanner:
    """Finds the enabled built-in detectors' hits in a string: sorted, non-overlapping."""

    def __init__(self, enabled: Iterable[str] = BUILTIN_DETECTORS) -> None:
        names = set(enabled)
        unknown = names - set(BUILTIN_DETECTORS)
        if unknown:
            raise ValueError(f"unknown detector(s) {sorted(unknown)}; built-in: {', '.join(BUILTIN_DETECTORS)}")
        self.enabled = tuple(n for n in BUILTIN_DETECTORS if n in names)
        self._url_credentials = "url_credentials" in names
        self._bearer = "bearer" in names
        self._api_key = "api_key" in names
        self._assignment = "assignment" in names
        self._email = "email" in names
        self._numeric = {"iban", "card", "phone"} & names
        self._numeric_labels = {_LABELS[n] for n in self._numeric}

    def hits(self, text: str) -> list[Hit]:
        """All hits in ``text``; where two overlap the earlier detector in BUILTIN_DETECTORS wins."""
        return self.hits_and_secret_words(text, False)[0]

    def hits_and_secret_words(self, text: str, want_words: bool) -> tuple[list[Hit], bool]:
        """The hits, and (if ``want_words``) whether the text mentions a word that can name a secret
        (key, token, password, auth, cookie...). The masker uses that to decide whether a JSON document
        may have keys like "password" whose values are masked whole.

        Text holding escapes (``%40``, ``&#64;``, ``\\u0040``, full-width characters) is scanned twice:
        as written, and decoded (:func:`decoded_view`), with the decoded hits mapped back."""
        hits, words = self._hits(text, want_words)
        if _may_be_encoded(text):
            view = decoded_view(text)
            if view is not None:
                decoded = self._view_hits(*view)
                if decoded:
                    # The same span found both ways: keep the decoded value, so "%65ve@x.org" and
                    # "eve@x.org" give one token.
                    spans = {(a, b) for a, b, _label, _norm in decoded}
                    hits = [h for h in hits if (h[0], h[1]) not in spans] + decoded
                if len(hits) > 1:
                    hits = _without_overlaps(hits)
        return hits, words

    def _view_hits(
        self, view: str, decoded_at: list[int], to_original: Callable[[int, int], tuple[int, int]]
    ) -> list[Hit]:
        """Hits that hold a decoded character, or follow one (``Bearer%20<token>``: the decoded space is
        the credential's context), found in windows of the view around them (a value cannot reach further
        than ``_VIEW_MARGIN``), mapped back to the original text. A hit touching a window's edge is dropped:
        it may be the cut-off part of a value the scan of the original text finds whole."""
        found: list[Hit] = []
        n = len(view)
        for lo, hi in _view_windows(n, decoded_at, _VIEW_MARGIN):
            for a, b, label, norm in self._hits(view[lo:hi], False)[0]:
                a, b = a + lo, b + lo
                if (a == lo and lo > 0) or (b == hi and hi < n):
                    continue
                k = bisect.bisect_left(decoded_at, a - 1)
                if k < len(decoded_at) and decoded_at[k] < b:
                    start, end = to_original(a, b)
                    found.append((start, end, label, norm))
        return found

    def _hits(self, text: str, want_words: bool) -> tuple[list[Hit], bool]:
        hits: list[Hit] = []
        words = False
        if self._bearer or self._assignment or want_words:
            lower = text.lower()
            contains = lower.__contains__
            # any(map(...)) iterates in C: one call instead of a Python loop over the needles.
            auth = self._bearer and any(map(contains, _AUTH_NEEDLES))
            assign = (
                self._assignment and ("=" in text or ":" in text or "," in text) and any(map(contains, NAME_NEEDLES))
            )
            words = want_words and (assign or any(map(contains, _SECRET_WORDS)))
            if auth or assign:
                if len(lower) != len(text):  # a few non-ASCII letters change length when lower-cased
                    lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
                hits.extend(_keyword_hits(text, lower, auth, assign))
        may_key = self._api_key and _may_hold_api_key(text)
        if may_key:
            hits.extend(_api_key_hits(text))
        if self._api_key and "PRIVATE KEY-----" in text:
            hits.extend(_pem_hits(text))
        if self._assignment and "=" in text and ("?" in text or "&" in text):
            hits.extend(_query_param_hits(text))
        if "://" in text:
            if self._url_credentials:
                hits.extend(_url_credential_hits(text))
            if self._api_key and not may_key and "hooks.slack.com/" in text:
                hits.extend(_api_key_hits(text))  # a Slack webhook URL (otherwise found just above)
        if self._email and "@" in text:
            hits.extend(_email_hits(text))
        if self._numeric and len(text) >= 8:
            hits.extend(self._numeric_hits(text))
        if len(hits) > 1:
            hits = _without_overlaps(hits)
        return hits, words

    def _numeric_hits(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        prefixes: list[Hit] = []
        search = _NUM.search
        labels = self._numeric_labels
        lower_iban = "iban" in labels
        iban_end = 0
        for cand in _NUM_CANDIDATE.finditer(text):
            pos = cand.start()
            if lower_iban and cand.end() > iban_end:
                # A lower- or mixed-case IBAN holds a run of digits (this candidate): look around it.
                iban_end = cand.end() + 2
                lo = max(0, pos - _IBAN_LOOKBACK)
                if _IBAN_ANY.search(text, lo, iban_end + 40) is not None:
                    hits.extend(_lower_iban_hits(text, lo, iban_end))
            if text[pos + 4 : pos + 5] in ("-", "/", ".") and text[pos + 7 : pos + 8] == text[pos + 4]:
                # Starts with a date (2024-06-03, 2024/06/12): nothing can start inside it.
                if text[pos : pos + 4].isdigit() and text[pos + 5 : pos + 7].isdigit():
                    pos += 10
            elif pos >= 2 and text[pos - 2 : pos].isupper():
                pos -= 2  # an IBAN's country code comes before the digits the candidate starts with
            # Matches cannot extend past the candidate (same character classes); +2 lets the
            # look-aheads see the real next characters.
            end = cand.end() + 2
            while (m := search(text, pos, end)) is not None:
                hit = _numeric_hit(text, m)
                if hit is not None and hit[2] in labels and hit[1] < m.end():
                    # Only a prefix of the match checked: a value may start inside the rest (of two that
                    # overlap, the higher-ranked is kept). A national number's prefix is weak evidence
                    # ("01 4111 1111" of "01 4111 1111 1111 1111"): any whole match it overlaps wins.
                    (prefixes if _NUM_KINDS[m.lastindex or 0] == "national" else hits).append(hit)
                    pos = m.start() + 1
                elif hit is not None and hit[2] in labels:
                    hits.append(hit)
                    pos = hit[1]
                    if end - pos < 11:  # no room left for another phone, card or IBAN
                        break
                else:
                    # Not valid as a whole (e.g. a non-Luhn digit run): a phone may still start inside it.
                    pos = m.start() + 1
        for hit in prefixes:
            if not any(h[0] < hit[1] and hit[0] < h[1] for h in hits):
                hits.append(hit)
        return hits


# Lower- or mixed-case IBANs (de89 3704 ..., gb82 west 1234 ...). The numeric candidate scan only sees
# upper case; around each candidate (a run of digits), this looks for a lower-case letter pair, two check
# digits and a BBAN.
_IBAN_ANY = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][a-z][0-9]{2}(?:[ -]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])", re.ASCII)
_IBAN_LOOKBACK = 20  # country code, check digits and letters of the BBAN before its first digit run


def _lower_iban_hits(text: str, start: int, end: int) -> list[Hit]:
    hits: list[Hit] = []
    for m in _IBAN_ANY.finditer(text, start, min(len(text), end + 40)):
        hit = _iban_at(m.start(), m.group(), strict=True)
        if hit is not None:
            hits.append(hit)
    return hits


_RANK = {"token": 0, "secret": 0, "email": 1, "iban": 2, "card": 3, "phone": 4}


def _without_overlaps(hits: list[Hit]) -> list[Hit]:
    """Sorted, non-overlapping hits; of two overlapping hits the higher-ranked label wins. O(n log n):
    a 5 MB body can hold 100k+ hits."""
    hits.sort()
    kept: list[Hit] = []
    for hit in hits:
        while kept and hit[0] < kept[-1][1]:  # overlaps the last kept hit
            rank, last = _RANK.get(hit[2], 5), _RANK.get(kept[-1][2], 5)
            if rank < last or (rank == last and hit[0] == kept[-1][0]):  # same start: the longer (later)
                kept.pop()
            else:
                break
        else:
            kept.append(hit)
    return kept
