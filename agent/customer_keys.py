"""Keyed hashing of customer identifiers, shared by the database proxy and by business events.

Both sides must turn the same customer into the same hash whatever the formatting of the identifier, so the
normalisation is fixed and documented here (version 1):

1. numbers (int, integral Decimal) are written in decimal; floats are refused (11010519491231002 is not exact
   as a float);
2. Unicode NFKC: full-width digits and letters become ASCII (`１１０１` → `1101`), ideographic spaces become spaces;
3. case-folded (`X` → `x`; the check letter of a Chinese ID number is `X` or `x`);
4. every whitespace character and every hyphen or dash (`-`, U+2010–U+2015, U+2212) is removed, which also strips
   the ends; then NFKC once more, and steps 2–4 are repeated until nothing changes (so the result is stable).

The hash is HMAC-SHA256 of the UTF-8 result under a site key, as 64 lower-case hex digits. The key never appears
in a repr, a log or an error message; `key_id` names a key without revealing it, so two components can check that
they share one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
import unicodedata
from decimal import Decimal
from pathlib import Path

from agent.errors import ConfigError, CustosError

KEY_ENV = "CUSTOS_CUSTOMER_KEY"
MIN_KEY_BYTES = 16
_REMOVED = dict.fromkeys(map(ord, "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), None)


class CustomerKeyError(CustosError):
    """A value cannot be hashed as a customer identifier."""


def normalise_customer_id(value: str | int | Decimal) -> str:
    """The text that is hashed for `value` (see the module docstring); raises CustomerKeyError when empty."""
    if isinstance(value, bool) or isinstance(value, float):
        raise CustomerKeyError("a customer identifier must be text or an integer; pass floats as their exact text")
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            raise CustomerKeyError("a numeric customer identifier must be a whole number")
        value = format(value.quantize(Decimal(1)), "f")
    elif isinstance(value, int):
        value = str(value)
    elif not isinstance(value, str):
        raise CustomerKeyError(f"a customer identifier must be text or an integer, not {type(value).__name__}")
    text = value
    for _ in range(4):  # case-folding and removals can leave text NFKC would change: repeat to a fixed point
        step = unicodedata.normalize("NFKC", text).casefold()
        step = unicodedata.normalize("NFKC", "".join(step.translate(_REMOVED).split()))
        if step == text:
            break
        text = step
    if not text:
        raise CustomerKeyError("a customer identifier is empty once spaces and hyphens are removed")
    return text


class CustomerKeyHasher:
    """HMAC-SHA256 of normalised customer identifiers under one site key."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the customer key must be at least {MIN_KEY_BYTES} bytes; generate one with "
                "`python -c 'import secrets; print(\"hex:\" + secrets.token_hex(32))'`"
            )
        self._key = key
        self.key_id = hmac.digest(key, b"custos customer key id", "sha256").hex()[:16]

    def hash(self, value: str | int | Decimal) -> str:
        return hmac.digest(self._key, normalise_customer_id(value).encode("utf-8"), "sha256").hex()

    def __repr__(self) -> str:
        return f"CustomerKeyHasher(key=<hidden>, key_id={self.key_id})"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("a CustomerKeyHasher cannot be pickled: that would copy the key out of the process")

    @classmethod
    def load(
        cls, *, key: str | None = None, key_file: str | os.PathLike[str] | None = None, env: str = KEY_ENV
    ) -> CustomerKeyHasher:
        """The key from configuration text, else a key file, else the environment variable `env`.

        Text forms: `hex:<hex digits>`, `base64:<base64>`, or any other text taken as its UTF-8 bytes. A key file
        holds one of those forms and must not be readable by other users.
        """
        if key:
            return cls(parse_key_text(key, "the configured customer key"))
        if key_file is not None:
            return cls(_read_key_file(Path(key_file)))
        from_env = os.environ.get(env)
        if from_env:
            return cls(parse_key_text(from_env, f"the {env} environment variable"))
        raise ConfigError(f"no customer key: set customer_key or customer_key_file in the configuration, or {env}")


def parse_key_text(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        if text.startswith("hex:"):
            return bytes.fromhex(text[4:])
        if text.startswith("base64:"):
            return base64.b64decode(text[7:], validate=True)
    except (ValueError, binascii.Error) as e:
        raise ConfigError(f"{where} is not valid {text.split(':', 1)[0]}; check its encoding") from e
    return text.encode("utf-8")


def _read_key_file(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"customer key file {path} is readable by other users; run `chmod 600 {path}`")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"customer key file {path} cannot be read ({e.strerror}); check the path") from e
    try:
        return parse_key_text(raw.decode("utf-8"), f"customer key file {path}")
    except UnicodeDecodeError:
        return raw  # a binary key file is used byte for byte
