"""Built-in PII recognizers: where personal data and secrets sit in a text.

Each recognizer is a regular expression for candidates plus, where a format has
one, the check that real values pass: payment cards the Luhn checksum, IBANs
their mod-97 checksum (``python-stdnum``), phone numbers libphonenumber's rules
for the configured regions (``phonenumbers``), IP addresses the ``ipaddress``
parser. The checks keep order numbers, dates, versions and timestamps out of
the results, so masking does not eat ordinary text.

A match carries its type, its span and a normalised value (for keyed hashing:
the same e-mail in two spellings hashes the same).

>>> r = Recognizer()
>>> [(m.kind, m.value) for m in r.find("mail ann@example.com or call +44 20 7946 0958")]
[('email', 'ann@example.com'), ('phone', '+442079460958')]
>>> [m.kind for m in r.find("card 4111 1111 1111 1111, not 4111 1111 1111 1112")]
['card']
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn

EMAIL: Final = "email"
PHONE: Final = "phone"
CARD: Final = "card"
IBAN: Final = "iban"
IPV4: Final = "ipv4"
IPV6: Final = "ipv6"
API_KEY: Final = "api_key"
BEARER_TOKEN: Final = "bearer_token"
JWT: Final = "jwt"

# Listed in precedence order: when two detections overlap and start at the same
# place with the same length, the earlier type names it.
PII_TYPES: Final[tuple[str, ...]] = (
    JWT,
    BEARER_TOKEN,
    API_KEY,
    EMAIL,
    IBAN,
    CARD,
    IPV6,
    IPV4,
    PHONE,
)
_RANK: Final = {t: i for i, t in enumerate(PII_TYPES)}

# Regions whose national phone formats are recognised when none is configured
# (numbers written with +CC or 00CC are recognised whatever the region).
DEFAULT_PHONE_REGIONS: Final[tuple[str, ...]] = ("US", "GB", "DE", "FR", "IN")


@dataclass(frozen=True, slots=True)
class Match:
    kind: str
    start: int
    end: int
    value: str  # normalised, the input of keyed hashing


_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"
_EMAIL_RE: Final = re.compile(
    rf"(?<!{_LOCAL}){_LOCAL}+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_](?:[\w-]*[^\W_])?(?![\w-])"
)
_API_KEY_RE: Final = re.compile(
    r"(?<![\w-])(?:"
    r"sk-[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic (sk-ant-...), DeepSeek...
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r")(?![\w-])"
)
_API_KEY_HINTS: Final = (
    "sk-", "k_live_", "k_test_", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
    "github_pat_", "xox", "AIza", "hf_",
)  # fmt: skip
# RFC 6750 token68; the scheme name is case-insensitive. Sixteen characters at
# least, so prose ("the bearer of ...") is not a token.
_BEARER_RE: Final = re.compile(r"(?i:\bbearer)[ \t]+([A-Za-z0-9\-._~+/]{16,}=*)(?![\w\-.~+/=])")
_JWT_RE: Final = re.compile(
    r"(?<![\w-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?![\w-])"
)
# The first digit comes before the look-behind so the engine can skip to digits.
_CARD_RE: Final = re.compile(
    r"\d(?<!\d\d)(?:"
    r"\d{12,18}"
    r"|\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"  # 16 and 19 digits in fours
    r"|\d{3}([ -])\d{6}\2\d{5}"  # American Express 4-6-5
    r"|\d{3}([ -])\d{6}\3\d{4}"  # Diners 4-6-4
    r")(?!\d)"
)
_IBAN_RE: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE: Final = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\w)")
_IPV6_RE: Final = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}|:)?(?::[0-9A-Fa-f]{0,4}){2,8}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[0-9A-Za-z]+)?(?![\w:]|\.\d)"
)
# Phone numbers take one of three shapes before libphonenumber validates them:
# international (+CC or 00CC), North American ((201) 555-0123, 201-555-0123), or
# national with a trunk 0 (0121 234 5678, 01 23 45 67 89, 030 123456). Bare digit
# runs without these shapes are ids, amounts and timestamps far more often.
_PHONE_SEP = r"[ .\-/]"
_PHONE_RE: Final = re.compile(
    r"(?<![\w+.,/-])(?:"
    rf"(?:\+|\b00)[1-9]\d{{0,3}}(?:{_PHONE_SEP}?\(?\d{{1,5}}\)?){{1,6}}"
    rf"|(?<!:)(?:\(\d{{3}}\)[ ]?|\d{{3}}{_PHONE_SEP})\d{{3}}{_PHONE_SEP}\d{{4}}"
    rf"|(?<!:)\(?0\d{{1,5}}\)?(?:{_PHONE_SEP}?\d{{2,8}}){{1,4}}"
    # not followed by a time or a decimal part (dates with times, timestamps)
    r")(?![\w:]|[.,]\d)"
)
_DATE_RE: Final = re.compile(r"\d{1,2}([./-])\d{1,2}\1(?:\d{2}|\d{4})")
_PHONE_GROUP_END: Final = re.compile(r"[ .\-/(][\d()]*$")
_DIGIT_RE: Final = re.compile(r"\d")
# Every value of the recognizers that run in windows holds one of these: a digit
# (phone, card, IBAN, IPv4), '@' (e-mail) or ':' (IPv6). Tokens and keys are
# found by their literal prefixes over the whole text instead.
_INTEREST_RE: Final = re.compile(r"[\d@:]")
_WINDOWED_ABOVE: Final = 512
# Context kept on each side of an interesting character: longer than any value
# made of several words (a grouped IBAN is at most 42 characters), then widened
# to whitespace so a word is never cut.
_MARGIN: Final = 64
_SPACE_RE: Final = re.compile(r"\s")
_LAST_SPACE_RE: Final = re.compile(r"\s(?=\S*\Z)")


def _windows(text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``text`` around its interesting characters, merged when they touch."""
    n = len(text)
    search = _INTEREST_RE.search
    m = search(text)
    lo = hi = -1
    while m is not None:
        p = m.start()
        a = max(0, p - _MARGIN)
        if hi < 0 or a > hi:
            if hi >= 0:
                yield lo, hi
            lo = _word_start(text, a)
        hi = _word_end(text, min(n, p + 1 + _MARGIN))
        m = search(text, hi)  # jump: everything before hi is in the window already
    if hi >= 0:
        yield lo, hi


def _word_start(text: str, pos: int) -> int:
    """Where the whitespace-delimited word holding ``pos`` starts."""
    for lo in (max(0, pos - 256), 0):
        m = _LAST_SPACE_RE.search(text, lo, pos)
        if m is not None:
            return m.end()
        if lo == 0:
            break
    return 0


def _word_end(text: str, pos: int) -> int:
    m = _SPACE_RE.search(text, pos)
    return m.start() if m is not None else len(text)


def luhn_ok(digits: str) -> bool:
    """The payment card checksum.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    return bool(_luhn.is_valid(digits))


def iban_ok(text: str) -> bool:
    """The IBAN check: country format and mod-97 checksum.

    >>> iban_ok("GB82 WEST 1234 5698 7654 32"), iban_ok("GB82 WEST 1234 5698 7654 33")
    (True, False)
    """
    return bool(_iban.is_valid(text))


class Recognizer:
    """Finds PII of the given types in a text; thread-safe (no mutable state)."""

    def __init__(
        self,
        types: Iterable[str] = PII_TYPES,
        *,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    ) -> None:
        wanted = set(types)
        unknown = wanted - set(PII_TYPES)
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}; known: {list(PII_TYPES)}")
        self.types = tuple(t for t in PII_TYPES if t in wanted)
        self.phone_regions = tuple(r.upper() for r in phone_regions) or ("ZZ",)
        bad = [
            r for r in self.phone_regions if r != "ZZ" and r not in phonenumbers.SUPPORTED_REGIONS
        ]
        if bad:
            raise ValueError(f"unknown phone regions {bad} (ISO 3166 codes such as US, GB)")
        finders: dict[str, Callable[[str, bool], Iterator[Match]]] = {
            EMAIL: self._emails,
            PHONE: self._phones,
            CARD: self._cards,
            IBAN: self._ibans,
            IPV4: self._ipv4,
            IPV6: self._ipv6,
            API_KEY: self._api_keys,
            BEARER_TOKEN: self._bearer,
            JWT: self._jwts,
        }
        tokens = (API_KEY, BEARER_TOKEN, JWT)
        self._token_finders = [finders[t] for t in self.types if t in tokens]
        self._window_finders = [finders[t] for t in self.types if t not in tokens]

    def find(self, text: str) -> list[Match]:
        """Non-overlapping matches in text order (the earliest, then the longest wins)."""
        found: list[Match] = []
        for finder in self._token_finders:
            found.extend(finder(text, False))
        if self._window_finders:
            if len(text) <= _WINDOWED_ABOVE:
                found.extend(self._in_window(text, 0))
            else:
                # A long text is searched only around the characters these values
                # need, in windows widened to whole words: prose between them
                # costs one scan instead of one per recognizer.
                for lo, hi in _windows(text):
                    found.extend(self._in_window(text[lo:hi], lo))
        if len(found) < 2:
            return found
        found.sort(key=lambda m: (m.start, m.start - m.end, _RANK[m.kind]))
        out = [found[0]]
        for m in found[1:]:
            if m.start >= out[-1].end:
                out.append(m)
        return out

    def _in_window(self, text: str, offset: int) -> list[Match]:
        has_digit = _DIGIT_RE.search(text) is not None
        found: list[Match] = []
        for finder in self._window_finders:
            found.extend(finder(text, has_digit))
        if offset:
            found = [Match(m.kind, m.start + offset, m.end + offset, m.value) for m in found]
        return found

    # Each finder gets the text and whether it has a digit at all: most texts are
    # excluded by a substring test before any regular expression runs.

    @staticmethod
    def _emails(text: str, has_digit: bool) -> Iterator[Match]:
        if "@" not in text:
            return
        for m in _EMAIL_RE.finditer(text):
            yield Match(EMAIL, m.start(), m.end(), m.group().lower())

    @staticmethod
    def _api_keys(text: str, has_digit: bool) -> Iterator[Match]:
        if not any(h in text for h in _API_KEY_HINTS):
            return
        for m in _API_KEY_RE.finditer(text):
            yield Match(API_KEY, m.start(), m.end(), m.group())

    @staticmethod
    def _bearer(text: str, has_digit: bool) -> Iterator[Match]:
        if "earer" not in text and "EARER" not in text:
            return
        for m in _BEARER_RE.finditer(text):
            yield Match(BEARER_TOKEN, m.start(1), m.end(1), m.group(1))

    @staticmethod
    def _jwts(text: str, has_digit: bool) -> Iterator[Match]:
        if "eyJ" not in text:
            return
        for m in _JWT_RE.finditer(text):
            yield Match(JWT, m.start(), m.end(), m.group())

    @staticmethod
    def _cards(text: str, has_digit: bool) -> Iterator[Match]:
        if not has_digit:
            return
        for m in _CARD_RE.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if luhn_ok(digits):
                yield Match(CARD, m.start(), m.end(), digits)

    @staticmethod
    def _ibans(text: str, has_digit: bool) -> Iterator[Match]:
        if not has_digit:
            return
        for m in _IBAN_RE.finditer(text):
            # Groups of four may run on into the next word ("... 3000 from"):
            # drop trailing space-separated groups until the checksum holds.
            candidate = m.group()
            while True:
                compact = candidate.replace(" ", "").upper()
                if iban_ok(compact):
                    yield Match(IBAN, m.start(), m.start() + len(candidate), compact)
                    break
                cut = candidate.rfind(" ")
                if cut < 0 or len(compact) <= 15:
                    break
                candidate = candidate[:cut]

    @staticmethod
    def _ipv4(text: str, has_digit: bool) -> Iterator[Match]:
        if not has_digit or "." not in text:
            return
        for m in _IPV4_RE.finditer(text):
            yield Match(IPV4, m.start(), m.end(), m.group())

    @staticmethod
    def _ipv6(text: str, has_digit: bool) -> Iterator[Match]:
        if "::" not in text and text.count(":") < 7:
            return
        for m in _IPV6_RE.finditer(text):
            raw = m.group()
            if sum(c.isalnum() for c in raw.split("%", 1)[0]) < 4:
                # "::", "::1" or "a::b" are punctuation, loopback or code (Rust,
                # C++ paths) far more often than someone's address.
                continue
            try:
                addr = ipaddress.IPv6Address(raw.split("%", 1)[0])
            except ValueError:
                continue
            yield Match(IPV6, m.start(), m.end(), addr.compressed)

    def _phones(self, text: str, has_digit: bool) -> Iterator[Match]:
        if not has_digit:
            return
        for m in _PHONE_RE.finditer(text):
            # The last group may belong to the next number or word ("... 5678 12
            # items"): drop trailing groups until a valid number remains.
            candidate = m.group()
            if candidate.isdigit() and len(candidate) < 10:
                continue  # a short bare run is an id, a zip code, a count
            while sum(c.isdigit() for c in candidate) >= 7:
                if _DATE_RE.fullmatch(candidate):
                    break  # 05.06.2026 is a date in every region that writes it so
                e164 = self._valid_phone(candidate)
                if e164 is not None:
                    yield Match(PHONE, m.start(), m.start() + len(candidate), e164)
                    break
                cut = _PHONE_GROUP_END.search(candidate)
                if cut is None:
                    break
                candidate = candidate[: cut.start()]

    def _valid_phone(self, candidate: str) -> str | None:
        digits = sum(c.isdigit() for c in candidate)
        if digits > 17:
            return None
        international = candidate.startswith(("+", "00"))
        for region in ("ZZ",) if international else self.phone_regions:
            try:
                number = phonenumbers.parse(
                    "+" + candidate[2:] if candidate.startswith("00") else candidate, region
                )
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return None
