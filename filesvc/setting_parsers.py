"""The parsers of settings' values: each validates one raw value (a flag, an environment string or
a TOML value) and returns it typed, or raises ValueError with a message that completes the
sentence "FILESVC_X (source) ..."."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from blobstore.masterkey import MasterKeyError, parse_master_key

Parser = Callable[[object], Any]
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """A setting cannot be used; the message is one line naming it and its source, with no
    secret.  ``filesvc serve`` prints it and exits with status 2."""


def _text(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def integer(low: int, high: int = 2**63 - 1) -> Parser:
    """A whole number in [low, high]; a TOML integer or a string of digits."""

    def parse(raw: object) -> int:
        text = _text(raw).strip().replace("_", "")
        if isinstance(raw, bool) or not text.lstrip("-").isdigit() or not text.isascii():
            raise ValueError(f"must be a whole number, got {_text(raw)[:40]!r}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def seconds(low: float, high: float = 86_400.0, *, inclusive: bool = False) -> Parser:
    """A duration in seconds, in (low, high], or [low, high] when ``inclusive``."""

    def parse(raw: object) -> float:
        try:
            value = float(_text(raw).strip())
        except ValueError:
            raise ValueError(f"must be a number of seconds, got {_text(raw)[:40]!r}") from None
        above = low <= value if inclusive else low < value
        if not (above and value <= high):  # also refuses nan and inf
            bound = "at least" if inclusive else "more than"
            raise ValueError(f"must be {bound} {low:g} and at most {high:g} seconds, got {raw}")
        return value

    return parse


def choice(*allowed: str) -> Parser:
    """One of ``allowed``, case-insensitive; the canonical spelling is returned."""

    def parse(raw: object) -> str:
        text = _text(raw).strip()
        for option in allowed:
            if text.lower() == option.lower():
                return option
        raise ValueError(f"must be one of {', '.join(allowed)}, got {text[:40]!r}")

    return parse


def boolean(raw: object) -> bool:
    text = _text(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {text[:40]!r}")


def host(raw: object) -> str:
    text = _text(raw).strip()
    if not text or len(text) > 253 or any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"must be a host name or address, got {text[:40]!r}")
    return text


def directory(raw: object) -> Path:
    text = _text(raw)
    if not text.strip() or "\x00" in text:
        raise ValueError(f"must be a directory path, got {text[:40]!r}")
    return Path(text).absolute()


def text(raw: object) -> str | None:
    """Free text, checked by whoever uses it; empty is unset."""
    value = _text(raw).strip()
    return value or None


def converter(raw: object) -> str | None:
    """A program name or path; ``off`` turns office previews off."""
    value = _text(raw).strip()
    if value.lower() in ("off", "none"):
        return None
    if not value or "\x00" in value:
        raise ValueError(f"must be a program name or path, or off, got {value[:40]!r}")
    return value


def origins(raw: object) -> tuple[str, ...]:
    """Comma-separated origins (``https://app.example``) or ``*``."""
    found = tuple(o.strip().rstrip("/") for o in _text(raw).split(",") if o.strip())
    for origin in found:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"must be http(s) origins or *, got {origin[:40]!r}")
    return found


def master_key_text(raw: object) -> str:
    """A master key: 32 bytes in base64 (checked here, decoded when the settings are built)."""
    value = _text(raw).strip()
    try:
        parse_master_key(value, source="the value")
    except MasterKeyError as exc:
        raise ValueError(str(exc).removeprefix("the value ")) from None
    return value


def key_file(raw: object) -> Path:
    value = _text(raw)
    if not value.strip() or "\x00" in value:
        raise ValueError(f"must be a file path, got {value[:40]!r}")
    return Path(value).absolute()


def jwt_secret(raw: object) -> str:
    text = _text(raw)
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes long")
    return text
