"""What to do with each kind of PII in each field: the redaction policy and the
text-level redactor that applies it.

Modes, per field and per type (the most specific one wins: field and type, then
the field's ``"*"``, then the type, then the default):

- ``off``: leave the value as it is (its recognizer does not even run);
- ``mask``: replace it with ``[TYPE]``;
- ``hash``: replace it with ``[TYPE:<16 hex>]``, a keyed HMAC-SHA256 of the
  normalised value, so the same e-mail or card correlates across traces without
  being readable; the key comes from settings and is never logged;
- ``drop``: drop the whole text (the field becomes null; an attribute is removed).

>>> p = RedactionPolicy(type_modes={"phone": "drop"}, field_modes={"response": {"email": "off"}})
>>> r = Redactor(p)
>>> r.redact("write to ann@example.com", "prompt")
Redacted(text='write to [EMAIL]', counts={'email': 1})
>>> r.redact("write to ann@example.com", "response")
Redacted(text='write to ann@example.com', counts={})
>>> r.redact("call +44 20 7946 0958", "prompt")
Redacted(text=None, counts={'phone': 1})
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Final, Literal, get_args

from llmpulse.errors import ConfigError
from llmpulse.privacy.recognizers import DEFAULT_PHONE_REGIONS, PII_TYPES, Recognizer

if TYPE_CHECKING:
    from llmpulse.settings import PrivacySettings

Mode = Literal["off", "mask", "hash", "drop"]
MODES: Final[tuple[str, ...]] = get_args(Mode)
# Fields a policy can name: the event's free text, its attribute values, and the
# raw text of a rejected message.
POLICY_FIELDS: Final[tuple[str, ...]] = ("prompt", "response", "attributes", "raw")
ANY_TYPE: Final = "*"


_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


@dataclass(frozen=True)
class Redacted:
    text: str | None  # None: the text was dropped
    counts: dict[str, int]


@dataclass(frozen=True)
class RedactionPolicy:
    """The redaction rules; build it once (``from_settings``) and share it."""

    default_mode: Mode = "mask"
    type_modes: Mapping[str, Mode] = field(default_factory=dict)
    field_modes: Mapping[str, Mapping[str, Mode]] = field(default_factory=dict)
    # The batch fields redact_batch rewrites (prompt/response only when text is stored).
    fields: tuple[str, ...] = ("prompt", "response", "attributes")
    hash_key: bytes | None = field(default=None, repr=False)
    pseudonymise_user_id: bool = False
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        def mode_ok(where: str, m: str) -> None:
            if m not in MODES:
                raise ConfigError(where, f"mode must be one of {list(MODES)}, got {m!r}")

        mode_ok("privacy.default_mode", self.default_mode)
        for kind, m in self.type_modes.items():
            if kind not in PII_TYPES:
                raise ConfigError(
                    "privacy.modes", f"unknown PII type {kind!r}; known: {list(PII_TYPES)}"
                )
            mode_ok(f"privacy.modes.{kind}", m)
        for name, modes in self.field_modes.items():
            if name not in POLICY_FIELDS:
                raise ConfigError(
                    "privacy.fields", f"unknown field {name!r}; known: {list(POLICY_FIELDS)}"
                )
            for kind, m in modes.items():
                if kind != ANY_TYPE and kind not in PII_TYPES:
                    raise ConfigError(
                        f"privacy.fields.{name}",
                        f"unknown PII type {kind!r}; known: {list(PII_TYPES)} or '*'",
                    )
                mode_ok(f"privacy.fields.{name}.{kind}", m)
        for name in self.fields:
            if name not in POLICY_FIELDS:
                raise ConfigError("privacy.fields", f"unknown field {name!r}")
        uses_hash = any(self.mode(f, t) == "hash" for f in POLICY_FIELDS for t in PII_TYPES)
        if (uses_hash or self.pseudonymise_user_id) and not self.hash_key:
            raise ConfigError(
                "privacy.hash_key",
                "keyed hashing (a 'hash' mode or pseudonymise_user_id) needs a key:"
                " set LLMPULSE_PRIVACY_HASH_KEY",
            )

    def mode(self, field_name: str, kind: str) -> Mode:
        per_field = self.field_modes.get(field_name, {})
        if kind in per_field:
            return per_field[kind]
        if ANY_TYPE in per_field:
            return per_field[ANY_TYPE]
        return self.type_modes.get(kind, self.default_mode)

    @classmethod
    def from_settings(cls, s: PrivacySettings, *, store_text: bool) -> RedactionPolicy:
        """The policy of the ``privacy`` settings section. Prompt and response are
        redacted only when they are stored (``clickhouse.store_text``): otherwise
        they are never written and scanning them would be wasted work."""
        if not s.redact:
            default: Mode = "off"
            type_modes: dict[str, Mode] = {}
            field_modes: dict[str, dict[str, Mode]] = {}
        else:
            default, type_modes, field_modes = s.default_mode, dict(s.modes), dict(s.fields)
        fields = ("prompt", "response", "attributes") if store_text else ("attributes",)
        key = s.hash_key.get_secret_value().encode() if s.hash_key else None
        return cls(
            default_mode=default,
            type_modes=type_modes,
            field_modes=field_modes,
            fields=fields,
            hash_key=key,
            pseudonymise_user_id=s.pseudonymise_user_id,
            phone_regions=tuple(s.phone_regions),
        )

    @cached_property
    def redactor(self) -> Redactor:
        return Redactor(self)


class Redactor:
    """Applies a policy to texts; one recognizer per field, built once."""

    def __init__(self, policy: RedactionPolicy) -> None:
        self.policy = policy
        self._key = policy.hash_key or b""
        self._recognizers: dict[str, Recognizer | None] = {}
        self._modes: dict[str, dict[str, Mode]] = {}
        for name in POLICY_FIELDS:
            modes = {t: policy.mode(name, t) for t in PII_TYPES}
            self._modes[name] = modes
            active = [t for t, m in modes.items() if m != "off"]
            self._recognizers[name] = (
                Recognizer(active, phone_regions=policy.phone_regions) if active else None
            )

    def active(self, field_name: str) -> bool:
        return self._recognizers[field_name] is not None

    def redact(self, text: str, field_name: str) -> Redacted:
        recognizer = self._recognizers[field_name]
        if recognizer is None or not text:
            return Redacted(text, {})
        found = recognizer.find(text)
        if not found:
            return Redacted(text, {})
        counts: dict[str, int] = {}
        for m in found:
            counts[m.kind] = counts.get(m.kind, 0) + 1
        modes = self._modes[field_name]
        if any(modes[m.kind] == "drop" for m in found):
            return Redacted(None, counts)
        parts: list[str] = []
        pos = 0
        for m in found:
            parts.append(text[pos : m.start])
            label = m.kind.upper()
            if modes[m.kind] == "hash":
                parts.append(f"[{label}:{self.digest(m.kind, m.value)}]")
            else:
                parts.append(f"[{label}]")
            pos = m.end
        parts.append(text[pos:])
        return Redacted("".join(parts), counts)

    def digest(self, kind: str, value: str) -> str:
        """Keyed hash of a normalised value: 64 bits as 16 letters ``a``-``p``. No
        digits, so a hash never looks like a card or phone number itself (hex could
        hold a Luhn-valid run of digits and be redacted again)."""
        msg = kind.encode() + b"\0" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:16].translate(_LETTERS)

    def pseudonym(self, user_id: str) -> str:
        """A stable stand-in for a user id: the same id always maps to the same
        pseudonym under one key, and the id cannot be read back without it."""
        msg = b"user_id\0" + user_id.encode("utf-8", "surrogatepass")
        return "u_" + hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]
