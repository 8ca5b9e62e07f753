"""In-process masking of personal data and secrets in exported spans.

``Masker(...).mask_span(span)`` is the first stage of the road (:mod:`otel_basic.road`); see
:mod:`otel_basic.masking.masker` for levels, tokens, the salt and the key allow-list.
"""

from otel_basic.masking.detectors import (
    BUILTIN_DETECTORS,
    Detector,
    Scanner,
    iban_valid,
    luhn_valid,
)
from otel_basic.masking.masker import (
    DEFAULT_ALLOW_KEYS,
    DEFAULT_EVENT_ALLOW_KEYS,
    DEFAULT_EVENT_HIDE_KEYS,
    DEFAULT_HIDE_KEYS,
    ERROR_PLACEHOLDER,
    HIDDEN,
    Level,
    Masker,
)

__all__ = [
    "BUILTIN_DETECTORS",
    "DEFAULT_ALLOW_KEYS",
    "DEFAULT_EVENT_ALLOW_KEYS",
    "DEFAULT_EVENT_HIDE_KEYS",
    "DEFAULT_HIDE_KEYS",
    "ERROR_PLACEHOLDER",
    "HIDDEN",
    "Detector",
    "Level",
    "Masker",
    "Scanner",
    "iban_valid",
    "luhn_valid",
]
