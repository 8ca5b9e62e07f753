"""Which names say "the value is a secret": one list, read by the attribute masker, the JSON paths and
the free-text detector (``'passphrase': 'v'``, ``api_key="v"``), so a name added here is masked on
every road a value takes."""

from __future__ import annotations

import functools
import re

SECRET_NAME = re.compile(
    r"(?i)(?:^|[._-])(?:password|passwd|pwd|passphrase|secret|client[._-]?secret|api[._-]?key|apikey"
    r"|access[._-]?key|secret[._-]?key|private[._-]?key|(?:access|refresh|auth|id)[._-]?token|token|jwt"
    r"|credentials?|authorization|proxy-authorization|cookies?|set-cookie|x-api-key)$"
)

NAME_NEEDLES = ("key", "oken", "ecret", "assw", "pwd", "uthorization", "ookie", "phrase", "credential", "jwt")
"""Substrings of every name :data:`SECRET_NAME` matches, lower-cased (kept in step with it; the tests
plant each name): a text without any of them names no secret, found with one ``in`` per needle."""

_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(key: str) -> bool:
    """``api_key``, ``x-api-key``, ``accessToken``; also camelCase (``sessionToken``, ``apiSecret``,
    ``SecretAccessKey``: the humps read as separators) and with spaces around it (``"password "``).
    Names are remembered when short (a long "name" is a misread string: caching it would hold memory)."""
    return _short_name_is_secret(key) if len(key) <= 256 else _names_secret(key)


@functools.lru_cache(maxsize=4096)
def _short_name_is_secret(key: str) -> bool:
    return _names_secret(key)


def _names_secret(key: str) -> bool:
    key = key.strip()
    return SECRET_NAME.search(key) is not None or SECRET_NAME.search(_CAMEL_HUMP.sub("_", key)) is not None
