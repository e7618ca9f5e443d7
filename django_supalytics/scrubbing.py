"""Text from outside (an answer, an exception) made safe to store, log and show."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote

from django.views.decorators.debug import sensitive_variables

#: The most of an error text kept, once scrubbed.
ERROR_TEXT_MAX = 500

# Terminal escape sequences (CSI, OSC, and ESC with one character), then any other C0, DEL or
# C1 control character, and the invisible ones that reorder or hide text (bidirectional
# overrides, zero-width characters): removed. Line breaks and tabs become spaces first.
_ESCAPES_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -~]?|[\x00-\x1f\x7f-\x9f]"
    r"|[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_BREAKS_RE = re.compile(r"[\r\n\t\u2028\u2029]")
_BEARER_RE = re.compile(r"\bbearer\s+[A-Za-z0-9._~+/-]+=*", re.IGNORECASE)


@sensitive_variables("api_key")
def scrub(text: str, api_key: str) -> str:
    """``text`` made safe to store, log and show: the key replaced by ``[API key]``, any bearer
    token by ``Bearer [redacted]``, line breaks and tabs turned into spaces, every other
    control character (and terminal escape sequence) removed; at most 500 characters."""
    text = _ESCAPES_RE.sub("", _BREAKS_RE.sub(" ", text))
    if len(api_key) >= 4:  # a shorter "key" would blank out ordinary text
        # As sent, and as an answer may echo it: JSON-, HTML- or percent-encoded.
        written = {api_key, json.dumps(api_key)[1:-1], html.escape(api_key), quote(api_key, "")}
        for form in sorted(written, key=len, reverse=True):
            text = text.replace(form, "[API key]")
    return _BEARER_RE.sub("Bearer [redacted]", text)[:ERROR_TEXT_MAX]
