"""Credentials out of URLs before they are shown anywhere, and private directories.

A URL may carry a secret in two places: its userinfo (``https://user:pw@host``) and its query
(``?api_key=...``). :func:`redact_url` keeps what a reader needs to recognise the destination
(scheme, host, port, path) and replaces the rest. Call it on every URL that goes into a message,
a report, a repr or a file: ``FlushReport.error``, warnings, doctor, replay output, rejected
``.reason`` files.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REDACTED = "****"
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def redact_url(url: str) -> str:
    """``url`` with any userinfo and query values replaced by ``****``; never raises.

    A string that does not parse as a URL is returned with everything after the scheme's ``//``
    up to the first ``@`` masked, which is the only place a credential can hide in a broken URL.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = REDACTED + "@" + netloc.rpartition("@")[2]
        query = parts.query
        if query:
            query = "&".join(
                (item.partition("=")[0] + "=" + REDACTED) if "=" in item else REDACTED for item in query.split("&")
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        head, sep, rest = url.partition("://")
        if sep and "@" in rest:
            return head + sep + REDACTED + "@" + rest.rpartition("@")[2]
        return url


def redact_urls_in(text: str) -> str:
    """Every URL inside free text, redacted (for exception messages that quote a URL)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def make_private_dir(path: Path | str) -> Path:
    """Create ``path`` and any missing parents as ``0700`` whatever the umask; return it.

    Directories that already exist are left as they are (they are the user's, e.g. ``~/.cache``),
    except ``path`` itself when we just created it. Spans on disk are masked, but they are still
    the application's data: nobody else on the machine should list or read them.
    """
    target = Path(path).expanduser()
    missing: list[Path] = []
    current = target
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, stat.S_IRWXU)  # the umask may have removed bits; never added any
    if not target.is_dir():
        raise NotADirectoryError(str(target))
    return target
