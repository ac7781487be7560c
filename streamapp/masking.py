"""Masking of personal data and secrets before anything leaves the worker.

E-mails become a keyed hash, names are reduced to an initial, card data and
anything that looks like a secret or a card number is dropped; what a store
said about a row is cut from error details.  The audit trail
(``streamapp.audit``) indexes only what went through here.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
import typing
from typing import Any, Optional

from .codec import has_card_number
from .config import Settings, settings
from .records import EVENT_TYPES

_SECRET_KEYS = re.compile(r"pass(word)?|secret|card_?number|pan|cvv|cvc|token", re.I)
_MASKED = "***"


def _field_names() -> frozenset:
    """Every field name of every event record, nested records included."""
    names = {"type", "schema_version"}
    todo = list(EVENT_TYPES.values())
    while todo:
        cls = todo.pop()
        for name, hint in typing.get_type_hints(cls).items():
            if name not in cls._options.fields:
                continue
            names.add(name)
            for inner in (hint, *getattr(hint, "__args__", ())):
                if isinstance(inner, type) and hasattr(inner, "_options"):
                    todo.append(inner)
    return frozenset(names)


_FIELD_NAMES = _field_names()


def _hash_key(cfg: Settings) -> bytes:
    return (cfg.audit_hash_key or f"streamapp:{cfg.app_id}").encode()


def email_hash(email: str, cfg: Settings = settings) -> str:
    digest = hmac.new(_hash_key(cfg), email.strip().lower().encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


#: Personal fields of the contract, by normalized name (``_plain_name``).
_PERSONAL = frozenset({"email", "displayname"})
#: Something that looks like an e-mail address inside any text.
_EMAIL_IN_TEXT = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def mask(value: Any, cfg: Settings = settings, allowed: Optional[frozenset] = None) -> Any:
    """A copy of a JSON value with PII masked and secrets removed.

    Whatever the value's shape: a personal field (``email``,
    ``display_name``, in any case or spelling such as ``Display-Name``) is
    masked whole, whether it holds a string, a number, a list or an object;
    any string anywhere has e-mail addresses and card numbers masked.  With
    ``allowed``, object keys not in it are dropped (at every depth).
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            key = str(key)
            if _is_secret(key) or (allowed is not None and key not in allowed):
                continue
            key = scrub(key)
            plain = _plain_name(key)
            if plain in _PERSONAL:
                out[key] = _personal(plain, item)
            else:
                out[key] = mask(item, cfg, allowed)
        return out
    if isinstance(value, list):
        return [mask(item, cfg, allowed) for item in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def _personal(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "displayname" and type(value) is str and value:
        return scrub(value[:1]) + _MASKED
    return _MASKED


def scrub(text: str) -> str:
    """Text with e-mail addresses and card numbers masked."""
    if "@" in text:
        text = _EMAIL_IN_TEXT.sub(_MASKED, text)
    # A card number has 13 digits at least: shorter strings cannot hold one.
    if len(text) >= 13 and has_card_number(text):
        return _MASKED
    return text


@functools.lru_cache(maxsize=4096)
def _plain_name(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    """Field names are few and repeat in every event: decide each name once."""
    return bool(_SECRET_KEYS.search(key)) or _plain_name(key) == "cardlast4"


def scrub_detail(detail: Any) -> Optional[str]:
    """A detail as the audit trail keeps it: what a store said about a row
    ("Failing row contains (...)", written by workers before details were
    reduced to names) is cut, and addresses and card numbers are masked."""
    if detail is None:
        return None
    text = str(detail)
    for marker in ("\nDETAIL:", "Failing row contains", "dup key:"):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut].rstrip() + " [values removed]"
    return scrub(text)
