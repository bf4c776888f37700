"""Caching: one parse per statement shape, per-execution fields kept apart, bounded memory, safe across threads."""

from __future__ import annotations

import threading

from agent.sqlaudit import Analyser, SensitiveMap, analyse


def test_statements_differing_only_in_values_are_parsed_once() -> None:
    analyser = Analyser("postgres")
    for i in range(50):
        in_list = ", ".join(["1"] * (i + 1))
        analyser.analyse(f"SELECT name FROM customers WHERE id = {i} AND name = 'n{i}' AND id IN ({in_list})")
    assert analyser.structures.misses == 1
    assert analyser.structures.hits == 49


def test_exact_repeats_return_the_stored_analysis() -> None:
    analyser = Analyser("postgres")
    first = analyser.analyse("SELECT 1 FROM t WHERE a = $1")
    assert analyser.analyse("SELECT 1 FROM t WHERE a = $1") is first
    assert analyser.texts.hits == 1


def test_cached_structure_does_not_carry_one_execution_into_another() -> None:
    analyser = Analyser("postgres")
    a = analyser.analyse("/*custos_user='alice',route='%2Fa'*/ SELECT ssn FROM customers WHERE id = 1")
    b = analyser.analyse("SELECT   ssn FROM customers WHERE id = 2 /*custos_user='bob'*/")
    c = analyser.analyse("SELECT ssn FROM customers WHERE id = 3")
    assert analyser.structures.misses == 1
    assert (a.end_user, b.end_user, c.end_user) == ("alice", "bob", None)
    assert a.tag("route") == "/a" and b.tag("route") is None
    assert a.fingerprint == b.fingerprint == c.fingerprint


def test_caches_stay_within_their_bounds() -> None:
    analyser = Analyser("postgres", text_cache_size=10, structure_cache_size=5)
    for i in range(200):
        analyser.analyse(f"SELECT c{i} FROM t WHERE x = {i}")
    assert len(analyser.texts) <= 10
    assert len(analyser.structures) <= 5
    assert analyser.analyse("SELECT c199 FROM t WHERE x = 199") is analyser.analyse("SELECT c199 FROM t WHERE x = 199")


def test_long_texts_skip_the_text_cache_and_huge_ones_are_cut_without_leaking() -> None:
    analyser = Analyser("postgres", text_cache_max_chars=100, max_statement_chars=5000)
    long_sql = "SELECT a FROM t WHERE b = '" + "secret " * 2000 + "'"
    a = analyser.analyse(long_sql)
    assert a.truncated
    assert "secret" not in a.redacted
    assert a.redacted == "SELECT a FROM t WHERE b = ?"
    assert len(analyser.texts) == 0


def test_module_analyse_keeps_configurations_apart() -> None:
    first = SensitiveMap.of({"public.customers.ssn": "id_number"})
    second = SensitiveMap.of({"public.customers.ssn": "tax_id"})
    sql = "SELECT ssn FROM customers"
    assert analyse(sql, sensitive=first).sensitive_classes == ("id_number",)
    assert analyse(sql, sensitive=second).sensitive_classes == ("tax_id",)
    assert analyse(sql).sensitive_classes == ()
    assert analyse(sql, dialect="mysql", database="shop").tables_read == ("shop.customers",)


def test_concurrent_threads_get_the_same_answers() -> None:
    analyser = Analyser("postgres", text_cache_size=16, structure_cache_size=8)
    statements = [f"SELECT c{i % 12} FROM t{i % 7} WHERE id = {i}" for i in range(400)]
    expected = {s: Analyser("postgres").analyse(s) for s in statements}
    failures: list[str] = []

    def work(offset: int) -> None:
        for s in statements[offset:] + statements[:offset]:
            got = analyser.analyse(s)
            if (got.fingerprint, got.redacted, got.tables_read) != (
                expected[s].fingerprint, expected[s].redacted, expected[s].tables_read,
            ):
                failures.append(s)

    threads = [threading.Thread(target=work, args=(n * 50,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert analyser.errors == 0


def test_one_analyser_serves_several_current_databases() -> None:
    sensitive = SensitiveMap.of({"shop.customers.ssn": "id_number"})
    analyser = Analyser("mysql", sensitive=sensitive)
    in_shop = analyser.analyse("SELECT ssn FROM customers WHERE id = 1", schema="shop")
    in_crm = analyser.analyse("SELECT ssn FROM customers WHERE id = 1", schema="crm")
    unset = analyser.analyse("SELECT ssn FROM customers WHERE id = 1")
    assert (in_shop.tables_read, in_crm.tables_read, unset.tables_read) == (
        ("shop.customers",), ("crm.customers",), ("customers",))
    assert in_shop.sensitive_classes == ("id_number",) and in_crm.sensitive_classes == ()
    assert in_shop.fingerprint == in_crm.fingerprint
    pg = Analyser("postgres")
    assert pg.analyse("SELECT * FROM t", schema="Sales").tables_read == ("sales.t",)
