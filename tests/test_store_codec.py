"""The codec's fast paths say exactly what the standard library says (laws, Hypothesis).

compact_json, load_json and the context MAC skip the standard library's Python layers on
every write; these laws pin them to json.dumps, json.loads and hmac.digest."""

from __future__ import annotations

import base64
import hmac
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comity.store._codec import ContextCodec, _b64, compact_json, dump_value, load_json
from comity.errors import Invalid

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400)
@given(json_values)
def test_compact_json_is_json_dumps_compact(value: object) -> None:
    text = compact_json(value)
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert load_json(text) == json.loads(text)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, [1, {"x": math.nan}]])
def test_compact_json_refuses_what_json_cannot_carry(bad: object) -> None:
    with pytest.raises(ValueError):
        compact_json(bad)
    with pytest.raises(Invalid) as e:
        dump_value(bad, 1000)
    assert e.value.field == "value"


def test_a_value_holding_itself_is_refused_as_invalid() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(Invalid) as e:
        dump_value(loop, 1000)
    assert e.value.field == "value"
    with pytest.raises(Invalid):
        dump_value({"f": object()}, 1000)


@settings(max_examples=400)
@given(st.text(max_size=40) | st.from_regex(r"\s*[\[\]{}0-9a-z\",:.eE+-]{0,12}\s*", fullmatch=True))
def test_load_json_says_what_json_loads_says(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError as e:
        with pytest.raises(ValueError) as got:
            load_json(text)
        assert str(got.value) == str(e)
    else:
        got_value = load_json(text)
        assert got_value == expected or (got_value != got_value and expected != expected)  # NaN


@settings(max_examples=200)
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_context_mac_is_hmac_sha256(secret: bytes, payload: bytes) -> None:
    assert ContextCodec("s1", secret)._mac(payload) == hmac.digest(secret, payload, "sha256")[:12]


@given(st.binary(max_size=100))
def test_b64_is_urlsafe_base64_without_padding(b: bytes) -> None:
    assert _b64(b) == base64.urlsafe_b64encode(b).rstrip(b"=").decode()
