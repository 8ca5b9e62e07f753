"""In-process masking of personal data and secrets in exported spans.

``Masker(...).mask_span(span)`` returns a masked copy of a finished span (every string of it): the
road's first stage (:mod:`otel_basic.road`); see :mod:`otel_basic.masking.masker` for levels, tokens,
the salt, the size bound and the key allow-list.
"""

from otel_basic.masking.detectors import (
    BUILTIN_DETECTORS,
    Detector,
    Scanner,
    decoded_view,
    iban_valid,
    luhn_valid,
)
from otel_basic.masking.masker import (
    DEFAULT_ALLOW_KEYS,
    DEFAULT_EVENT_ALLOW_KEYS,
    DEFAULT_EVENT_HIDE_KEYS,
    DEFAULT_HIDE_KEYS,
    ERROR_ATTRIBUTE,
    ERROR_PLACEHOLDER,
    HIDDEN,
    IDENTITY_KEYS,
    Level,
    Masker,
    derive_salt,
    hide_status,
    hide_traceback,
)

__all__ = [
    "BUILTIN_DETECTORS",
    "DEFAULT_ALLOW_KEYS",
    "DEFAULT_EVENT_ALLOW_KEYS",
    "DEFAULT_EVENT_HIDE_KEYS",
    "DEFAULT_HIDE_KEYS",
    "ERROR_ATTRIBUTE",
    "ERROR_PLACEHOLDER",
    "HIDDEN",
    "IDENTITY_KEYS",
    "Detector",
    "Level",
    "Masker",
    "Scanner",
    "decoded_view",
    "derive_salt",
    "hide_status",
    "hide_traceback",
    "iban_valid",
    "luhn_valid",
]
