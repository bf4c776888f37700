"""Customer-key hashing: one hash per customer whatever the formatting, and a key that never shows."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.customer_keys import CustomerKeyError, CustomerKeyHasher, normalise_customer_id
from agent.errors import ConfigError

KEY = bytes(range(32))
HASHER = CustomerKeyHasher(KEY)


@pytest.mark.parametrize(
    "variant",
    [
        "11010519491231002x",
        "11010519491231002X",
        " 110105 19491231 002X ",
        "110105-19491231-002x",
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits and letter
        "110105\u3000194912310\u201302X",  # ideographic space, en dash
        "\t110105 19491231 002x\n",
    ],
)
def test_formatting_variants_of_one_id_number_hash_alike(variant: str) -> None:
    assert HASHER.hash(variant) == HASHER.hash("11010519491231002x")


def test_numbers_and_their_text_hash_alike() -> None:
    assert HASHER.hash(6222020200112345678) == HASHER.hash("6222 0202 0011 2345 678")
    assert HASHER.hash(Decimal("42")) == HASHER.hash("42") == HASHER.hash(42)


def test_the_hash_is_hmac_sha256_of_the_documented_normalisation() -> None:
    expected = hmac.new(KEY, b"11010519491231002x", hashlib.sha256).hexdigest()
    assert HASHER.hash(" 110105 19491231 002X ") == expected
    assert len(expected) == 64


def test_different_customers_and_different_keys_hash_differently() -> None:
    assert HASHER.hash("11010519491231002x") != HASHER.hash("11010519491231003x")
    other = CustomerKeyHasher(bytes(range(1, 33)))
    assert other.hash("11010519491231002x") != HASHER.hash("11010519491231002x")
    assert other.key_id != HASHER.key_id


@given(st.text(max_size=40))
def test_normalisation_is_idempotent(text: str) -> None:
    try:
        once = normalise_customer_id(text)
    except CustomerKeyError:
        return
    assert normalise_customer_id(once) == once


def test_values_that_cannot_be_identifiers_are_refused() -> None:
    for bad in ("", "  - - ", 1.5, True, Decimal("1.5"), None):
        with pytest.raises(CustomerKeyError):
            HASHER.hash(bad)  # type: ignore[arg-type]


def test_the_key_never_appears_in_repr_str_logs_or_pickles(caplog: pytest.LogCaptureFixture) -> None:
    secret = b"a-very-secret-site-key-0123456789"
    hasher = CustomerKeyHasher(secret)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("hasher %r %s", hasher, hasher)
    for text in (repr(hasher), str(hasher), caplog.text):
        assert "secret" not in text and secret.hex() not in text
    assert hasher.key_id in repr(hasher)
    with pytest.raises(TypeError):
        pickle.dumps(hasher)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        CustomerKeyHasher(b"short")


def test_key_is_loaded_from_config_text_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hex_key = KEY.hex()
    assert CustomerKeyHasher.load(key=f"hex:{hex_key}").key_id == HASHER.key_id
    key_file = tmp_path / "customer.key"
    key_file.write_text(f"hex:{hex_key}\n")
    os.chmod(key_file, 0o600)
    assert CustomerKeyHasher.load(key_file=key_file).key_id == HASHER.key_id
    monkeypatch.setenv("CUSTOS_CUSTOMER_KEY", f"hex:{hex_key}")
    assert CustomerKeyHasher.load().key_id == HASHER.key_id
    monkeypatch.delenv("CUSTOS_CUSTOMER_KEY")
    with pytest.raises(ConfigError, match="no customer key"):
        CustomerKeyHasher.load()


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "customer.key"
    key_file.write_text("hex:" + KEY.hex())
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        CustomerKeyHasher.load(key_file=key_file)


def test_a_malformed_key_text_names_its_source_but_not_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        CustomerKeyHasher.load(key="hex:zz-not-hex-secretvalue")
    assert "configured customer key" in str(info.value)
    assert "secretvalue" not in str(info.value)
