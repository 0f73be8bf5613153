"""PII redaction: planted values never survive, the text around them does, the
checksums decide (a batch reaching the store redacted: tests/integration/test_privacy.py)."""

from __future__ import annotations

import string

import orjson
import phonenumbers as pn
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn

from llmpulse.errors import ConfigError
from llmpulse.privacy import (
    RedactionPolicy,
    Redactor,
    redact_batch,
    scrub_raw,
    scrub_rejections,
)
from llmpulse.privacy.recognizers import (
    DEFAULT_PHONE_REGIONS,
    PII_TYPES,
    Recognizer,
    iban_ok,
    luhn_ok,
)
from llmpulse.processors.batch_validate import validate_batch
from tests.helpers import event, raw

KEY = b"test-key-not-a-secret"

# ---------------------------------------------------------------- strategies

_B64URL = string.ascii_letters + string.digits + "-_"
_PHONE_FORMATS = (pn.PhoneNumberFormat.INTERNATIONAL, pn.PhoneNumberFormat.E164)
_REGIONS = sorted(r for r in pn.SUPPORTED_REGIONS if pn.example_number(r) is not None)
_TYPES = (pn.PhoneNumberType.FIXED_LINE, pn.PhoneNumberType.MOBILE)


@st.composite
def phones(draw: st.DrawFn) -> str:
    """Valid numbers: an example number of a region with its last digits varied,
    written internationally (any region) or nationally (a configured region)."""
    national = draw(st.booleans())
    region = draw(st.sampled_from(DEFAULT_PHONE_REGIONS if national else _REGIONS))
    example = pn.example_number_for_type(region, draw(st.sampled_from(_TYPES)))
    assume(example is not None)
    n = pn.PhoneNumber()
    n.merge_from(example)
    tail = draw(st.integers(0, 999))
    n.national_number = (n.national_number // 1000) * 1000 + tail
    assume(pn.is_valid_number(n))
    fmt = pn.PhoneNumberFormat.NATIONAL if national else draw(st.sampled_from(_PHONE_FORMATS))
    return pn.format_number(n, fmt)


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix, length = draw(
        st.sampled_from([("4", 16), ("51", 16), ("55", 16), ("34", 15), ("37", 15), ("6011", 16),
                         ("4", 19), ("36", 14)])
    )  # fmt: skip
    body = prefix + "".join(
        draw(st.lists(st.sampled_from(string.digits), min_size=length - len(prefix) - 1,
                      max_size=length - len(prefix) - 1))
    )  # fmt: skip
    digits = body + stdnum_luhn.calc_check_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep or length == 14:
        return digits
    if length == 15:
        return sep.join((digits[:4], digits[4:10], digits[10:]))
    return sep.join(digits[i : i + 4] for i in range(0, length, 4))


_IBAN_BBAN = {  # country: (letters, digits) of a BBAN made of letters then digits
    "DE": (0, 18), "GB": (4, 14), "AT": (0, 16), "NL": (4, 10), "IE": (4, 14), "CH": (0, 17),
    "PL": (0, 24), "SE": (0, 20), "DK": (0, 14), "FI": (0, 14),
}  # fmt: skip


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(_IBAN_BBAN)))
    letters, digits = _IBAN_BBAN[country]
    bban = "".join(
        draw(st.lists(st.sampled_from(string.ascii_uppercase), min_size=letters, max_size=letters))
    )
    bban += "".join(draw(st.lists(st.sampled_from(string.digits), min_size=digits,
                                  max_size=digits)))  # fmt: skip
    check = stdnum_iban.calc_check_digits(country + "00" + bban)
    value = country + check + bban
    assume(stdnum_iban.is_valid(value))  # national checks some countries add
    if draw(st.booleans()):
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def _token(alphabet: str, lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=lo, max_size=hi)


api_keys = st.one_of(
    _token(_B64URL, 20, 60).map(lambda t: "sk-" + t),
    _token(string.ascii_letters + string.digits, 20, 48).map(lambda t: "sk-ant-api03-" + t),
    _token(string.ascii_uppercase + string.digits, 16, 16).map(lambda t: "AKIA" + t),
)
jwts = st.tuples(_token(_B64URL, 10, 40), _token(_B64URL, 10, 80), _token(_B64URL, 0, 43)).map(
    lambda p: f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}"
)
ipv6s = st.ip_addresses(v=6).flatmap(lambda a: st.sampled_from([a.compressed, a.exploded]))
# planted value, its type, and the text written before it that must survive
PLANTED = {
    "email": st.emails(),
    "phone": phones(),
    "card": cards(),
    "iban": ibans(),
    "ipv4": st.ip_addresses(v=4).map(str),
    "ipv6": ipv6s.filter(lambda s: sum(c.isalnum() for c in s) >= 4),
    "api_key": api_keys,
    "bearer_token": _token(string.ascii_letters + string.digits + "-._~+/", 16, 60),
    "jwt": jwts,
}
# Ordinary words: lower-case letters cannot form any recognizer's value.
words = st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=10), max_size=12)


def _plant(kind: str, value: str) -> tuple[str, str]:
    """(text written, the part of it that is the PII value)."""
    return ("Authorization: Bearer " + value, value) if kind == "bearer_token" else (value, value)


# ---------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(PII_TYPES), words, words)
def test_planted_value_is_masked_and_the_text_around_survives(
    data: st.DataObject, kind: str, before: list[str], after: list[str]
) -> None:
    value = data.draw(PLANTED[kind])
    written, secret = _plant(kind, value)
    prefix, suffix = " ".join([*before, ""]), " ".join(["", *after])
    out = Redactor(RedactionPolicy()).redact(prefix + written + suffix, "prompt")
    assert out.text == prefix + written.replace(secret, f"[{kind.upper()}]") + suffix
    assert out.counts == {kind: 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(st.sampled_from(PII_TYPES), min_size=1, max_size=6),
       st.lists(words, min_size=6, max_size=12))  # fmt: skip
def test_long_texts_searched_in_windows_lose_nothing(
    data: st.DataObject, kinds: list[str], fillers: list[list[str]]
) -> None:
    # Texts over 512 characters are searched only around digits, '@' and ':'.
    filler = [" ".join(f * 20) for f in fillers]
    parts, expected = [filler[0]], [filler[0]]
    for i, kind in enumerate(kinds):
        written, secret = _plant(kind, data.draw(PLANTED[kind]))
        parts += [written, filler[(i + 1) % len(filler)]]
        expected += [written.replace(secret, f"[{kind.upper()}]"), filler[(i + 1) % len(filler)]]
    out = Redactor(RedactionPolicy()).redact("\n".join(parts), "prompt")
    assert out.text == "\n".join(expected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(PII_TYPES), st.sampled_from(["mask", "hash", "drop"]),
       st.text(max_size=40), st.text(max_size=40))  # fmt: skip
def test_planted_value_never_survives_any_mode_in_any_text(
    data: st.DataObject, kind: str, mode: str, before: str, after: str
) -> None:
    value = data.draw(PLANTED[kind])
    written, secret = _plant(kind, value)
    assume(secret not in before and secret not in after)
    policy = RedactionPolicy(default_mode=mode, hash_key=KEY)  # type: ignore[arg-type]
    # Whitespace keeps the value apart from its neighbours (digits around a card
    # number make a different number), as it is in real text.
    text = before + "\n" + written + " \t" + after
    out = Redactor(policy).redact(text, "response")
    if mode == "drop":
        assert out.text is None
    else:
        assert out.text is not None
        assert secret not in out.text
    assert out.counts.get(kind, 0) >= 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(PII_TYPES), words)
def test_redacted_text_holds_nothing_to_redact(
    data: st.DataObject, kind: str, around: list[str]
) -> None:
    text = " ".join([*around, _plant(kind, data.draw(PLANTED[kind]))[0], *around])
    r = Redactor(RedactionPolicy(default_mode="hash", hash_key=KEY))
    once = r.redact(text, "prompt").text
    assert once is not None
    assert r.redact(once, "prompt").counts == {}


@given(st.lists(st.text(alphabet=string.ascii_letters + " ,.;!?'\"()", max_size=30), max_size=30))
def test_prose_is_left_alone(parts: list[str]) -> None:
    text = " ".join(parts)
    assert Recognizer().find(text) == []


def test_ordinary_numbers_are_not_pii() -> None:
    text = (
        "On 2026-01-01 at 12:30:45 (ts 1767225600000) order 123456 cost $12.50 for 3 items;"
        " version 1.2.3, build 20260101, std::vector<int>, a::b, MAC 00:1a:2b:3c:4d:5e,"
        " ratio 3/4, 99.9% uptime, card ending 1111, the bearer of this letter."
        " Due 01-19-2026 00:52 or 05.06.2026 12:30 or 19.01.2026; ts 01:02:03.456789;"
        " zip 02139, id 0445760, pages 0123-4567."
    )
    assert Recognizer().find(text) == []


# ---------------------------------------------------------------- checksums


@pytest.mark.parametrize(
    ("number", "ok"),
    [("4111111111111111", True), ("5500005555555559", True), ("378282246310005", True),
     ("4111111111111112", False), ("1234567812345678", False), ("79927398713", True)],
)  # fmt: skip
def test_luhn(number: str, ok: bool) -> None:
    assert luhn_ok(number) is ok


@given(cards(), st.data())
def test_a_card_with_one_digit_changed_is_not_a_card(card: str, data: st.DataObject) -> None:
    digits = [i for i, c in enumerate(card) if c.isdigit()]
    i = data.draw(st.sampled_from(digits))
    new = data.draw(st.sampled_from([d for d in string.digits if d != card[i]]))
    broken = card[:i] + new + card[i + 1 :]
    # Luhn catches every single-digit error, so the changed number is no card.
    assert not luhn_ok("".join(c for c in broken if c.isdigit()))
    assert [m.kind for m in Recognizer(["card"]).find(f"pay {broken} now")] == []


@pytest.mark.parametrize(
    ("value", "ok"),
    [("DE89 3704 0044 0532 0130 00", True), ("GB82WEST12345698765432", True),
     ("FR14 2004 1010 0505 0001 3M02 606", True), ("NL91ABNA0417164300", True),
     ("DE89 3704 0044 0532 0130 01", False), ("GB82WEST12345698765433", False),
     ("XX89370400440532013000", False)],
)  # fmt: skip
def test_iban_checksum(value: str, ok: bool) -> None:
    assert iban_ok(value) is ok
    found = [m.kind for m in Recognizer(["iban"]).find(f"iban {value} thanks")]
    assert found == (["iban"] if ok else [])


@given(ibans(), st.data())
def test_an_iban_with_one_character_changed_is_not_an_iban(value: str, data: st.DataObject) -> None:
    spots = [i for i, c in enumerate(value) if c.isdigit() and i >= 2]
    i = data.draw(st.sampled_from(spots))
    new = data.draw(st.sampled_from([d for d in string.digits if d != value[i]]))
    broken = value[:i] + new + value[i + 1 :]
    # mod 97 catches every single-character substitution
    assert not iban_ok(broken)


def test_ip_addresses_are_parsed_not_guessed() -> None:
    d = Recognizer(["ipv4", "ipv6"])
    found = d.find("from 10.0.0.256, 300.1.1.1, 1.2.3 and 12:34:56 but 10.0.0.255 and fe80::1:2")
    assert [(m.kind, m.value) for m in found] == [("ipv4", "10.0.0.255"), ("ipv6", "fe80::1:2")]


# ---------------------------------------------------------------- policy


def test_modes_per_field_and_type_most_specific_wins() -> None:
    p = RedactionPolicy(
        default_mode="mask",
        type_modes={"email": "hash", "ipv4": "off"},
        field_modes={"response": {"*": "drop", "ipv4": "mask"}},
        hash_key=KEY,
    )
    assert p.mode("prompt", "email") == "hash"
    assert p.mode("prompt", "ipv4") == "off"
    assert p.mode("prompt", "phone") == "mask"
    assert p.mode("response", "email") == "drop"
    assert p.mode("response", "ipv4") == "mask"
    r = Redactor(p)
    text = "ann@example.com from 10.0.0.1"
    hashed = r.redact(text, "prompt").text
    assert hashed is not None and hashed.startswith("[EMAIL:") and hashed.endswith("10.0.0.1")
    assert r.redact(text, "response").text is None
    assert r.redact("from 10.0.0.1", "response").text == "from [IPV4]"


def test_keyed_hash_correlates_spellings_and_depends_on_the_key() -> None:
    a = Redactor(RedactionPolicy(default_mode="hash", hash_key=KEY))
    b = Redactor(RedactionPolicy(default_mode="hash", hash_key=b"another key"))
    one = a.redact("Ann@Example.com", "prompt").text
    two = a.redact("ann@example.com", "prompt").text
    assert one == two
    assert one != b.redact("ann@example.com", "prompt").text
    assert a.pseudonym("user-1") == a.pseudonym("user-1") != b.pseudonym("user-1")
    assert "user-1" not in a.pseudonym("user-1")


def test_hashing_without_a_key_is_refused_and_the_key_is_never_shown() -> None:
    with pytest.raises(ConfigError, match="LLMPULSE_PRIVACY_HASH_KEY"):
        RedactionPolicy(type_modes={"email": "hash"})
    with pytest.raises(ConfigError, match="hash_key"):
        RedactionPolicy(pseudonymise_user_id=True)
    p = RedactionPolicy(pseudonymise_user_id=True, hash_key=b"sup3r-s3cret")
    assert "sup3r" not in repr(p)


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [({"type_modes": {"passport": "mask"}}, "privacy.modes"),
     ({"field_modes": {"model": {"email": "mask"}}}, "privacy.fields"),
     ({"field_modes": {"prompt": {"email": "scramble"}}}, "privacy.fields.prompt.email"),
     ({"default_mode": "blur"}, "privacy.default_mode")],
)  # fmt: skip
def test_bad_policy_names_the_setting(kwargs: dict, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        RedactionPolicy(**kwargs)
    assert err.value.setting == where


def test_policy_from_settings_redacts_prompts_only_when_stored() -> None:
    from llmpulse.settings import Settings

    s = Settings(privacy={"hash_key": "k", "modes": {"email": "hash"}})
    assert RedactionPolicy.from_settings(s.privacy, store_text=False).fields == ("attributes",)
    p = RedactionPolicy.from_settings(s.privacy, store_text=True)
    assert p.fields == ("prompt", "response", "attributes")
    assert p.mode("prompt", "email") == "hash" and p.hash_key == b"k"
    off = RedactionPolicy.from_settings(
        Settings(privacy={"redact": False}).privacy, store_text=True
    )
    assert not any(off.redactor.active(f) for f in ("prompt", "response", "attributes", "raw"))
    assert "**" in str(s.masked()["privacy"]["hash_key"])


# ---------------------------------------------------------------- batches


def _batch(*events: dict) -> object:
    out = validate_batch([raw(e) for e in events], [f"t:{i}" for i in range(len(events))])
    assert not out.rejected
    return out.batch


def test_redact_batch_rewrites_text_attributes_and_user_ids() -> None:
    batch = _batch(
        event(1, prompt="mail ann@example.com", response="ok", user_id="alice",
              attributes={"client_ip": "10.1.2.3", "plan": "pro"}),
        event(2, prompt="nothing here", response="call +1 201-555-0123", user_id=""),
        event(3, attributes={"card": "4111 1111 1111 1111"}, user_id="alice"),
    )  # fmt: skip
    policy = RedactionPolicy(
        field_modes={"attributes": {"card": "drop"}}, pseudonymise_user_id=True, hash_key=KEY
    )
    counts = redact_batch(batch, policy)  # type: ignore[arg-type]
    o = batch.objects  # type: ignore[attr-defined]
    assert o["prompt"].tolist() == ["mail [EMAIL]", "nothing here", None]
    assert o["response"].tolist() == ["ok", "call [PHONE]", None]
    assert o["attributes"].tolist() == [{"client_ip": "[IPV4]", "plan": "pro"}, {}, {}]
    pseudo = policy.redactor.pseudonym("alice")
    assert o["user_id"].tolist() == [pseudo, "", pseudo]
    assert batch.redactions.tolist() == [  # type: ignore[attr-defined]
        {"email": 1, "ipv4": 1}, {"phone": 1}, {"card": 1}
    ]  # fmt: skip
    assert dict(counts.by_type) == {"email": 1, "ipv4": 1, "phone": 1, "card": 1}
    assert counts.events == 3 and counts.pseudonymised == 2
    assert dict(counts.dropped) == {"attributes": 1}


def test_scrub_raw_redacts_every_string_even_deeply_nested() -> None:
    p = RedactionPolicy()
    # deeper than Python's recursion limit allows recursing, and than orjson writes
    deep = b'{"deep":' + b"[" * 900 + b'"ann@example.com"' + b"]" * 900 + b',"prompt":"x"}'
    out = scrub_raw(deep, p, store_text=True)
    assert b"ann@example.com" not in out and b"[EMAIL]" in out
    assert orjson.loads(out)["prompt"] == "x"
    shallow = orjson.dumps({"a": [[{"b": "ann@example.com"}]], "n": 1.5})
    assert orjson.loads(scrub_raw(shallow, p, store_text=True)) == {
        "a": [[{"b": "[EMAIL]"}]],
        "n": 1.5,
    }
    assert scrub_raw(b"\xff\xfe broken ann@example.com", p, store_text=True).endswith(b"[EMAIL]")
    assert scrub_raw(b'{"prompt":"secret"}', p, store_text=False) == b'{"prompt":null}'


def test_rejections_keep_their_identity_and_lose_their_pii() -> None:
    from llmpulse.errors import ValidationError
    from llmpulse.processors.cost import PriceTable
    from llmpulse.processors.traces import RawMessage, TraceProcessor
    from llmpulse.processors.validate import validate_raw

    msg = RawMessage(raw(event(1, latency_ms=-1, prompt="call +1 201-555-0123")), "t:7")
    with pytest.raises(ValidationError) as err:
        validate_raw(msg.value)
    rejection = TraceProcessor(PriceTable.default()).reject(msg, err.value)
    [kept] = scrub_rejections([rejection], RedactionPolicy(), store_text=True)
    assert (kept.rejection_id, kept.reason, kept.source) == (
        rejection.rejection_id,
        rejection.reason,
        "t:7",
    )
    assert b"555-0123" not in kept.raw and b"[PHONE]" in kept.raw
