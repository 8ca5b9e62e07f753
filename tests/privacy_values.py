"""Hypothesis strategies for personal values and secrets, in the encodings the README says are covered.

Each strategy yields a :class:`Planted`: the text to plant, and the substrings that must never leave the
process (the value in every form a serializer might write it). Written from the formats' public
descriptions (RFC 5322 addresses, E.164/NANP numbers, ISO 13616 IBANs, ISO/IEC 7812 card numbers with
Luhn, well-known key prefixes), not from the detector code.
"""

from __future__ import annotations

import html
import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from hypothesis import strategies as st

__all__ = ["Planted", "forms", "leaked", "personal_values"]


@dataclass(frozen=True)
class Planted:
    kind: str
    text: str  # what is planted
    secrets: tuple[str, ...]  # what must not survive (besides ``text`` itself)

    def all_secrets(self) -> tuple[str, ...]:
        return (self.text, *self.secrets)


def forms(value: str) -> set[bytes]:
    """The raw UTF-8 form and the JSON-escaped forms a serializer might have used."""
    return {
        value.encode(),
        json.dumps(value)[1:-1].encode(),
        json.dumps(value, ensure_ascii=False)[1:-1].encode(),
    }


def leaked(blob: bytes, planted: list[Planted]) -> list[str]:
    out = []
    for p in planted:
        for secret in p.all_secrets():
            if any(f in blob for f in forms(secret)):
                out.append(f"{p.kind}: {secret!r} (planted {p.text!r})")
    return out


# --- e-mail addresses ------------------------------------------------------------------------------------

_LOCAL_CHARS = string.ascii_lowercase + string.digits
_local = st.builds(
    lambda head, sep, tail: head + (sep + tail if tail else ""),
    st.text(_LOCAL_CHARS, min_size=2, max_size=10),
    st.sampled_from([".", "_", "-", "+"]),
    st.text(_LOCAL_CHARS, min_size=0, max_size=8),
)
_label = st.text(string.ascii_lowercase + string.digits, min_size=2, max_size=10)
_tld = st.sampled_from(["com", "org", "net", "de", "fr", "co.uk", "io", "example", "museum"])
_address = st.builds(lambda local, label, tld: f"{local}@{label}.{tld}", _local, _label, _tld)


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


_EMAIL_ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda a: a,
    "upper": lambda a: a.upper(),
    "url": lambda a: quote(a, safe=""),
    "html-dec": lambda a: a.replace("@", "&#64;"),
    "html-hex": lambda a: a.replace("@", "&#x40;"),
    "html-named": lambda a: a.replace("@", "&commat;").replace(".", "&period;"),
    "html-escape": lambda a: html.escape(a).replace("@", "&#64;"),
    "json-u": lambda a: a.replace("@", "\\u0040"),
    "fullwidth": _fullwidth,
    "mailto": lambda a: f"<mailto:{a}>",
    "angle": lambda a: f"Ada <{a}>",
}


@st.composite
def emails(draw: st.DrawFn) -> Planted:
    address = draw(_address)
    how = draw(st.sampled_from(sorted(_EMAIL_ENCODINGS)))
    return Planted(f"email/{how}", _EMAIL_ENCODINGS[how](address), (address,))


@st.composite
def address_literals(draw: st.DrawFn) -> Planted:
    local = draw(_local)
    host = draw(
        st.sampled_from(["[10.1.2.3]", "[192.0.2.44]", "localhost", "[IPv6:2001:db8::1]"])
    )
    return Planted("email/literal", f"{local}@{host}", ())


# --- phone numbers ---------------------------------------------------------------------------------------

def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=n, max_size=n)


@st.composite
def phones(draw: st.DrawFn) -> Planted:
    style = draw(st.sampled_from(["e164", "intl-spaced", "intl-dashed", "intl-dotted", "nanp-paren", "nanp-dash",
                                  "nanp-dot", "nanp-space", "uk", "de", "fr"]))
    area = str(draw(st.integers(200, 989)))
    exchange = str(draw(st.integers(200, 999)))
    line = draw(_digits(4))
    if style == "e164":
        text = "+" + draw(st.sampled_from(["44", "49", "33", "1", "353", "61"])) + draw(_digits(10))
    elif style.startswith("intl"):
        sep = {"intl-spaced": " ", "intl-dashed": "-", "intl-dotted": "."}[style]
        cc = draw(st.sampled_from(["44", "49", "33", "39", "34", "31", "1", "81", "91"]))
        text = sep.join(["+" + cc, draw(_digits(2)), draw(_digits(4)), draw(_digits(4))])
    elif style == "nanp-paren":
        text = f"({area}) {exchange}-{line}"
    elif style == "nanp-dash":
        text = f"{area}-{exchange}-{line}"
    elif style == "nanp-dot":
        text = f"{area}.{exchange}.{line}"
    elif style == "nanp-space":
        text = f"{area} {exchange} {line}"
    elif style == "uk":
        text = "0" + draw(st.sampled_from(["20", "161", "131"])) + " " + draw(_digits(4)) + " " + draw(_digits(4))
    elif style == "de":
        text = "0" + draw(st.sampled_from(["30", "89", "176", "151"])) + " " + draw(_digits(8))
    else:
        text = "0" + str(draw(st.integers(1, 7))) + " " + " ".join(draw(_digits(2)) for _ in range(4))
    return Planted(f"phone/{style}", text, ())


# --- cards -----------------------------------------------------------------------------------------------


def _luhn_complete(prefix: str, length: int, body: str) -> str:
    partial = (prefix + body)[: length - 1]
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return partial + str((10 - total % 10) % 10)


@st.composite
def cards(draw: st.DrawFn) -> Planted:
    brand = draw(st.sampled_from(["visa", "mastercard", "amex", "discover"]))
    prefix, length = {"visa": ("4", 16), "mastercard": ("5" + str(draw(st.integers(1, 5))), 16),
                      "amex": (draw(st.sampled_from(["34", "37"])), 15), "discover": ("6011", 16)}[brand]
    number = _luhn_complete(prefix, length, draw(_digits(length)))
    style = draw(st.sampled_from(["compact", "space", "dash", "dot"]))
    groups = [number[:4], number[4:10], number[10:]] if length == 15 else [number[i : i + 4] for i in range(0, 16, 4)]
    sep = {"compact": "", "space": " ", "dash": "-", "dot": "."}[style]
    return Planted(f"card/{brand}/{style}", sep.join(groups), (number,))


# --- IBANs -----------------------------------------------------------------------------------------------

# Country, BBAN shape (n = digits, a = upper-case letters, c = alphanumeric), from the IBAN registry.
_BBAN = {
    "DE": "18n", "FR": "10n11c2n", "GB": "4a14n", "NL": "4a10n", "ES": "20n", "IT": "1a10n12c", "BE": "12n",
    "AT": "16n", "CH": "5n12c", "PL": "24n", "PT": "21n", "IE": "4a14n", "SE": "20n", "NO": "11n", "DK": "14n",
}


def _shape(spec: str) -> list[tuple[int, str]]:
    out, num = [], ""
    for ch in spec:
        if ch.isdigit():
            num += ch
        else:
            out.append((int(num), ch))
            num = ""
    return out


@st.composite
def ibans(draw: st.DrawFn) -> Planted:
    country = draw(st.sampled_from(sorted(_BBAN)))
    alphabet = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}
    bban = "".join(draw(st.text(alphabet[kind], min_size=n, max_size=n)) for n, kind in _shape(_BBAN[country]))
    rearranged = "".join(str(int(c, 36)) for c in bban + country + "00")
    iban = f"{country}{98 - int(rearranged) % 97:02d}{bban}"
    style = draw(st.sampled_from(["compact", "grouped", "lower", "lower-grouped"]))
    if style == "lower" and not re.search(r"[0-9]{8}", iban):
        style = "lower-grouped"  # README known miss: lower-case, no spaces and no run of 8 digits
    text = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if "grouped" in style else iban
    if style.startswith("lower"):
        text = text.lower()
    return Planted(f"iban/{country}/{style}", text, (iban,))


# --- secrets ---------------------------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits


@st.composite
def secrets(draw: st.DrawFn) -> Planted:
    kind = draw(st.sampled_from(["openai", "langfuse", "github", "aws", "bearer", "password", "url", "url-user"]))
    # Mixed case and a non-hex letter: a secret can never be read inside a hex token by accident.
    rand = "Qz" + draw(st.text(_ALNUM, min_size=20, max_size=30)) + "9"
    if kind == "openai":
        return Planted("secret/openai", f"sk-proj-{rand}", ())
    if kind == "langfuse":
        return Planted("secret/langfuse", f"sk-lf-{rand}", ())
    if kind == "github":
        return Planted("secret/github", "ghp_" + (rand * 2)[:36], ())
    if kind == "aws":
        key = "AKIA" + draw(st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16))
        return Planted("secret/aws", key, ())
    if kind == "bearer":
        return Planted("secret/bearer", f"Authorization: Bearer {rand}.x-1", (f"{rand}.x-1",))
    if kind == "password":
        return Planted("secret/password", f"password={rand}", (rand,))
    user = draw(st.text(string.ascii_lowercase, min_size=3, max_size=8)) + "Qx"
    host = draw(st.sampled_from(["hooks.example.com", "10.0.0.7:8443", "api.example.org"]))
    if kind == "url":
        return Planted("secret/url-credentials", f"https://{user}:{rand}@{host}/cb?x=1", (rand, f"{user}:{rand}"))
    return Planted("secret/url-user", f"https://{rand}@{host}/repo.git", (rand,))


def personal_values() -> st.SearchStrategy[Planted]:
    return st.one_of(emails(), address_literals(), phones(), cards(), ibans(), secrets())
