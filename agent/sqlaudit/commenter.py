"""sqlcommenter tags: `/*custos_user='alice',route='%2Floans%2F42'*/`, the format Google's sqlcommenter emits.

Each key and value is URL-encoded, values are single-quoted with `'` escaped as `\\'`. Drivers that pass the
SQL through `%`-formatting without parameters leave `%%` where `%` was meant; both spellings decode the same.
A comment that is not entirely `key='value'` pairs is an ordinary comment and yields nothing.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

END_USER_TAG = "custos_user"
MAX_TAGS = 32
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 256

_PAIR = r"\s*[^=,'\s][^=,']*='(?:[^'\\]|\\.)*'\s*"
_COMMENT = re.compile(rf"{_PAIR}(?:,{_PAIR})*", re.S)
_PAIRS = re.compile(r"\s*([^=,'\s][^=,']*)='((?:[^'\\]|\\.)*)'\s*,?", re.S)


def _decode(text: str) -> str:
    if "%%" in text:
        text = text.replace("%%", "%")
    return unquote(text)


def parse_sqlcommenter(comment: str) -> dict[str, str]:
    """The tags of one comment's content (without `/*` `*/`), or {} when it is not a sqlcommenter comment."""
    if len(comment) > MAX_TAGS * (MAX_KEY_CHARS + MAX_VALUE_CHARS) * 4 or not _COMMENT.fullmatch(comment):
        return {}
    tags: dict[str, str] = {}
    for m in _PAIRS.finditer(comment):
        key = _decode(m.group(1).strip())[:MAX_KEY_CHARS]
        value = _decode(m.group(2).replace("\\'", "'"))[:MAX_VALUE_CHARS]
        if key and len(tags) < MAX_TAGS:
            tags[key] = value
    return tags
