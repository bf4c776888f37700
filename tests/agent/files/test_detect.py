from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.files import samples
from agent.files.detect import Detector, bank_card_ok, luhn_ok, mobile_ok, resident_id_ok

TODAY = dt.date(2026, 1, 1)


def counts(text: str | bytes, **patterns: str) -> dict[str, int]:
    d = Detector(patterns, today=TODAY)
    d.scan(text.encode() if isinstance(text, str) else text)
    return d.counts


def test_the_standard_example_identity_number_is_valid_and_a_changed_check_character_is_not() -> None:
    assert resident_id_ok(b"11010519491231002X", TODAY)
    assert resident_id_ok(b"11010519491231002x", TODAY)
    assert not resident_id_ok(b"110105194912310021", TODAY)


@pytest.mark.parametrize(
    "first17, why",
    [("11010519490230002", "30 February"), ("11010520270101002", "born in the future"),
     ("11010518991231002", "before 1900"), ("99010519491231002", "no such province"),
     ("11010519491331002", "month 13")],
)
def test_an_identity_number_with_an_impossible_birth_date_or_region_is_not_counted(first17: str, why: str) -> None:
    number = first17 + samples.id_check(first17)
    assert not resident_id_ok(number.encode(), TODAY), why
    assert counts(number)["cn_resident_id"] == 0


@given(st.randoms(use_true_random=False))
@settings(max_examples=300)
def test_every_generated_identity_number_counts_once_and_its_broken_twin_counts_as_nothing(rng: random.Random) -> None:
    number = samples.resident_id(rng)
    assert counts(f"id:{number};")["cn_resident_id"] == 1
    broken = counts(f"id:{samples.break_check(number)};")
    assert broken["cn_resident_id"] == 0
    assert broken["bank_card"] == 0  # a mistyped identity number is not taken for a card


@given(st.randoms(use_true_random=False))
@settings(max_examples=300)
def test_every_generated_card_number_counts_once_and_its_broken_twin_not_at_all(rng: random.Random) -> None:
    card = samples.bank_card(rng)
    assert counts(f"{card}\n")["bank_card"] == 1
    assert counts(f"{samples.break_check(card)}\n")["bank_card"] == 0


@pytest.mark.parametrize(
    "card",
    ["6250941006528599", "6212345678901232", "4111111111111111", "5555555555554444", "378282246310005",
     "6011111111111117", "3530111333300000", "2221000000000009"],
)
def test_published_test_cards_of_the_common_networks_count_including_unionpay_62(card: str) -> None:
    assert bank_card_ok(card.encode())
    assert counts(f"card={card}")["bank_card"] == 1


def test_a_luhn_valid_number_outside_every_issuer_range_is_not_a_card() -> None:
    body = "777712345678901"
    number = body + samples.luhn_digit(body)
    assert luhn_ok(number.encode())
    assert counts(number)["bank_card"] == 0


def test_a_card_number_written_in_groups_of_four_counts() -> None:
    card = "6222021234567890"
    card = card[:-1] + samples.luhn_digit(card[:-1])
    grouped = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    assert counts(f"卡号: {grouped}。")["bank_card"] == 1
    assert counts("-".join(card[i : i + 4] for i in range(0, 16, 4)))["bank_card"] == 1


@pytest.mark.parametrize("text", ["13800138000", "+86 138 0013 8000", "+8613800138000", "0086-13800138000",
                                  "手机13800138000，", "138-0013-8000"])
def test_mainland_mobile_numbers_count_in_the_ways_people_write_them(text: str) -> None:
    assert counts(text)["cn_mobile"] == 1


@pytest.mark.parametrize("text", ["12345678901", "10086", "A13800138000", "138001380001", "order 13800138000X"])
def test_numbers_that_only_look_like_mobiles_do_not_count(text: str) -> None:
    assert counts(text)["cn_mobile"] == 0


def test_mobile_prefixes_follow_the_carriers_ranges() -> None:
    assert mobile_ok(b"19912345678") and mobile_ok(b"16612345678")
    assert not mobile_ok(b"19412345678") and not mobile_ok(b"11012345678")


def test_emails_count_and_digits_glued_to_letters_are_not_identifiers() -> None:
    c = counts("zhang.san@bank.com.cn, li+si@example.org, not-an-email@, x@y\nINV6250941006528599")
    assert c["email"] == 2
    assert c["bank_card"] == 0


def test_custom_patterns_count_every_match_and_every_class_is_always_present() -> None:
    c = counts("EMP-000123 EMP-000124 客户号:8812", staff_no=r"EMP-\d{6}", customer_no="客户号:\\d+")
    assert c == {"cn_resident_id": 0, "bank_card": 0, "cn_mobile": 0, "email": 0, "staff_no": 2, "customer_no": 1}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("junk", [b"7" * 2_000_000, b"a" * 2_000_000, b"a." * 1_000_000, b"1 " * 1_000_000])
def test_hostile_input_is_scanned_in_linear_time(junk: bytes) -> None:
    d = Detector()
    d.scan(junk)
    assert sum(d.counts.values()) == 0
