"""Statement types, tables, columns and sensitive classes for statements with known answers."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.sqlaudit import Analyser, Analysis, Catalogue, SensitiveMap

SENSITIVE = SensitiveMap.of(
    {
        "public.customers.ssn": "id_number",
        "public.customers.name": "name",
        "public.customers.phone": "phone",
        "public.cards.pan": "bank_card",
        "public.customers.address": "address",
        "shop.customers.ssn": "id_number",
        "shop.customers.name": "name",
    }
)
CATALOGUE = Catalogue.of(
    {
        "public.customers": ["id", "name", "ssn", "phone", "address", "balance"],
        "public.orders": ["id", "customer_id", "amount"],
        "public.cards": ["id", "customer_id", "pan"],
    }
)
ALL_CUSTOMER_COLUMNS = tuple(
    sorted(f"public.customers.{c}" for c in ["id", "name", "ssn", "phone", "address", "balance"])
)
PG = Analyser("postgres", sensitive=SENSITIVE, catalogue=CATALOGUE)
PG_NO_CATALOGUE = Analyser("postgres", sensitive=SENSITIVE)
MY = Analyser("mysql", sensitive=SENSITIVE, database="shop")


def check(a: Analysis, **expected: object) -> None:
    actual = {name: getattr(a, name) for name in expected}
    assert actual == expected


def test_point_lookup_reads_the_selected_and_filtered_columns() -> None:
    check(
        PG.analyse("SELECT name, ssn FROM customers WHERE id = 42"),
        statement_type="SELECT",
        tables_read=("public.customers",),
        tables_written=(),
        columns=("public.customers.id", "public.customers.name", "public.customers.ssn"),
        sensitive_classes=("id_number", "name"),
        parse_ok=True,
    )


def test_select_star_expands_from_the_catalogue_and_counts_every_sensitive_class() -> None:
    check(
        PG.analyse("SELECT * FROM customers"),
        columns=ALL_CUSTOMER_COLUMNS,
        sensitive_classes=("address", "id_number", "name", "phone"),
    )


def test_select_star_without_a_catalogue_keeps_the_star_and_the_known_sensitive_columns() -> None:
    a = PG_NO_CATALOGUE.analyse("SELECT * FROM customers")
    assert "public.customers.*" in a.columns
    assert "public.customers.ssn" in a.columns
    assert a.sensitive_classes == ("address", "id_number", "name", "phone")


def test_count_star_reads_no_column() -> None:
    check(PG.analyse("SELECT count(*) FROM customers"), columns=(), sensitive_classes=())


def test_join_qualifies_columns_through_aliases() -> None:
    check(
        PG.analyse(
            "SELECT c.name, sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id "
            "GROUP BY c.name ORDER BY 2 DESC LIMIT 10"
        ),
        tables_read=("public.customers", "public.orders"),
        columns=("public.customers.id", "public.customers.name", "public.orders.amount", "public.orders.customer_id"),
        sensitive_classes=("name",),
    )


def test_unqualified_column_in_a_join_goes_to_the_table_known_to_have_it() -> None:
    a = PG.analyse("SELECT pan, amount FROM cards JOIN orders USING (customer_id)")
    assert a.columns == ("public.cards.pan", "public.orders.amount")
    assert a.sensitive_classes == ("bank_card",)


def test_cte_reads_its_underlying_table() -> None:
    check(
        PG.analyse("WITH big AS (SELECT * FROM customers WHERE balance > 5000) SELECT count(*) FROM big"),
        statement_type="SELECT",
        tables_read=("public.customers",),
        columns=ALL_CUSTOMER_COLUMNS,
    )


def test_derived_table_column_is_counted_where_it_is_read() -> None:
    check(
        PG.analyse("SELECT x.ssn FROM (SELECT ssn, id FROM customers WHERE id < 10) AS x"),
        tables_read=("public.customers",),
        columns=("public.customers.id", "public.customers.ssn"),
        sensitive_classes=("id_number",),
    )


def test_union_and_subquery_read_all_their_tables() -> None:
    a = PG.analyse(
        "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE amount > 5) "
        "UNION SELECT name FROM staff ORDER BY name"
    )
    assert a.tables_read == ("public.customers", "public.orders", "public.staff")
    assert "public.customers.name" in a.columns and "public.staff.name" in a.columns
    assert "public.orders.customer_id" in a.columns


def test_exists_select_star_reads_no_columns() -> None:
    a = PG.analyse("SELECT id FROM orders o WHERE EXISTS (SELECT * FROM customers c WHERE c.id = o.customer_id)")
    assert a.tables_read == ("public.customers", "public.orders")
    assert a.columns == ("public.customers.id", "public.orders.customer_id", "public.orders.id")
    assert a.sensitive_classes == ()


def test_correlated_unqualified_column_resolves_to_the_outer_table() -> None:
    a = PG.analyse("SELECT name FROM customers WHERE EXISTS (SELECT 1 FROM orders WHERE customer_id = customers.id)")
    assert "public.orders.customer_id" in a.columns
    assert "public.customers.id" in a.columns


def test_insert_select_reads_and_writes() -> None:
    check(
        PG.analyse("INSERT INTO archive.customers_old (id, ssn) SELECT id, ssn FROM customers WHERE balance = 0"),
        statement_type="INSERT",
        tables_read=("public.customers",),
        tables_written=("archive.customers_old",),
        sensitive_classes=("id_number",),
    )


def test_insert_values_writes_the_listed_columns() -> None:
    check(
        PG.analyse("INSERT INTO customers (name, phone) VALUES ('Ann', '+86 138'), ('Bo', '+86 139')"),
        tables_read=(),
        tables_written=("public.customers",),
        columns=("public.customers.name", "public.customers.phone"),
        sensitive_classes=("name", "phone"),
    )


def test_update_writes_its_target_and_returning_reads_it() -> None:
    check(
        PG.analyse("UPDATE customers SET phone = $1 WHERE id = $2"),
        statement_type="UPDATE",
        tables_read=(),
        tables_written=("public.customers",),
        columns=("public.customers.id", "public.customers.phone"),
    )
    a = PG.analyse("UPDATE customers SET balance = balance + 1 WHERE id = 7 RETURNING ssn")
    assert a.tables_read == ("public.customers",)
    assert a.sensitive_classes == ("id_number",)


def test_update_from_reads_the_other_table() -> None:
    check(
        PG.analyse("UPDATE orders o SET amount = 0 FROM customers c WHERE c.id = o.customer_id AND c.ssn = 'x'"),
        tables_read=("public.customers",),
        tables_written=("public.orders",),
        sensitive_classes=("id_number",),
    )


def test_delete_using() -> None:
    check(
        PG.analyse("DELETE FROM orders o USING customers c WHERE o.customer_id = c.id AND c.name = 'x'"),
        statement_type="DELETE",
        tables_read=("public.customers",),
        tables_written=("public.orders",),
    )


def test_copy_table_to_stdout_is_an_export_of_every_column() -> None:
    check(
        PG.analyse("COPY customers TO STDOUT WITH (FORMAT csv)"),
        statement_type="COPY",
        export=True,
        tables_read=("public.customers",),
        tables_written=(),
        columns=ALL_CUSTOMER_COLUMNS,
    )


def test_copy_query_to_stdout_reads_the_query_tables() -> None:
    check(
        PG.analyse("COPY (SELECT name, phone FROM customers WHERE id < 100) TO STDOUT WITH CSV HEADER"),
        statement_type="COPY",
        export=True,
        tables_read=("public.customers",),
        sensitive_classes=("name", "phone"),
    )


def test_copy_from_stdin_writes_the_listed_columns() -> None:
    check(
        PG.analyse("COPY public.customers (id, ssn) FROM STDIN"),
        export=False,
        tables_read=(),
        tables_written=("public.customers",),
        columns=("public.customers.id", "public.customers.ssn"),
    )


def test_copy_to_server_file_is_an_export() -> None:
    a = PG.analyse("COPY customers TO '/tmp/all.csv' CSV")
    assert a.export and a.tables_read == ("public.customers",)
    assert "/tmp" not in a.redacted


def test_declare_cursor_names_it_and_analyses_its_query() -> None:
    check(
        PG.analyse("DECLARE big_read NO SCROLL CURSOR WITH HOLD FOR SELECT ssn FROM customers WHERE id > 10"),
        statement_type="DECLARE",
        cursor_name="big_read",
        tables_read=("public.customers",),
        sensitive_classes=("id_number",),
    )


@pytest.mark.parametrize(
    ("sql", "kind", "cursor"),
    [
        ("FETCH 100 FROM big_read", "FETCH", "big_read"),
        ("FETCH FORWARD 50 IN big_read", "FETCH", "big_read"),
        ("FETCH ALL FROM \"Mixed\"", "FETCH", "Mixed"),
        ("FETCH NEXT FROM Big_Read", "FETCH", "big_read"),
        ("MOVE ABSOLUTE 10 IN c", "MOVE", "c"),
        ("CLOSE big_read", "CLOSE", "big_read"),
        ("CLOSE ALL", "CLOSE", None),
    ],
)
def test_cursor_statements_name_their_cursor(sql: str, kind: str, cursor: str | None) -> None:
    a = PG.analyse(sql)
    assert (a.statement_type, a.cursor_name, a.tables_read) == (kind, cursor, ())


def test_prepare_execute_deallocate() -> None:
    check(
        PG.analyse("PREPARE q(int) AS SELECT name, ssn FROM customers WHERE id = $1"),
        statement_type="PREPARE",
        statement_name="q",
        tables_read=("public.customers",),
        sensitive_classes=("id_number", "name"),
    )
    check(PG.analyse("EXECUTE q(42)"), statement_type="EXECUTE", statement_name="q", redacted="EXECUTE q(?)")
    check(PG.analyse("DEALLOCATE PREPARE q"), statement_type="DEALLOCATE", statement_name="q")


def test_explain_reads_data_only_with_analyze() -> None:
    assert PG.analyse("EXPLAIN SELECT ssn FROM customers").tables_read == ()
    check(
        PG.analyse("EXPLAIN (ANALYZE, BUFFERS) SELECT ssn FROM customers"),
        statement_type="EXPLAIN",
        tables_read=("public.customers",),
        sensitive_classes=("id_number",),
    )


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("BEGIN", "BEGIN"),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "BEGIN"),
        ("COMMIT", "COMMIT"),
        ("END", "COMMIT"),
        ("ROLLBACK TO SAVEPOINT s1", "ROLLBACK"),
        ("SAVEPOINT s1", "SAVEPOINT"),
        ("SET search_path TO public", "SET"),
        ("SET application_name = 'custos'", "SET"),
        ("SHOW server_version", "SHOW"),
        ("CREATE INDEX ON customers (ssn)", "DDL"),
        ("ALTER TABLE customers ADD COLUMN email text", "DDL"),
        ("DROP TABLE IF EXISTS tmp_export", "DDL"),
        ("TRUNCATE customers", "TRUNCATE"),
        ("GRANT SELECT ON customers TO alice", "GRANT"),
        ("VACUUM ANALYZE customers", "VACUUM"),
        ("LISTEN channel", "LISTEN"),
        ("DO $$ BEGIN RAISE NOTICE 'hi'; END $$", "DO"),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT"),
        ("VALUES (1, 2)", "SELECT"),
        ("WITH moved AS (DELETE FROM orders WHERE amount = 0 RETURNING *) INSERT INTO old SELECT * FROM moved",
         "INSERT"),
        ("WITH x AS (SELECT 1) UPDATE orders SET amount = 1", "UPDATE"),
    ],
)
def test_statement_types(sql: str, kind: str) -> None:
    assert PG.analyse(sql).statement_type == kind


def test_data_modifying_cte_reads_and_writes() -> None:
    a = PG.analyse(
        "WITH moved AS (DELETE FROM orders WHERE amount = 0 RETURNING *) INSERT INTO old SELECT * FROM moved"
    )
    assert a.tables_written == ("public.old", "public.orders")
    assert a.tables_read == ("public.orders",)


def test_ddl_targets_are_written() -> None:
    assert PG.analyse("TRUNCATE customers").tables_written == ("public.customers",)
    a = PG.analyse("CREATE TABLE leak AS SELECT ssn FROM customers")
    assert (a.tables_read, a.tables_written) == (("public.customers",), ("public.leak",))
    assert a.sensitive_classes == ("id_number",)


def test_select_into_writes_a_new_table() -> None:
    a = PG.analyse("SELECT ssn INTO TEMP stolen FROM customers")
    assert a.tables_written == ("public.stolen",)
    assert a.tables_read == ("public.customers",)


def test_schema_qualified_and_quoted_names() -> None:
    a = PG.analyse('SELECT l."Name", "Body" FROM "Sales"."Leads" l JOIN crm.notes n ON n.lead_id = l.id')
    assert a.tables_read == ("Sales.Leads", "crm.notes")
    # An unqualified column over two tables of unknown columns cannot be placed: it stays bare.
    assert a.columns == ("Body", "Sales.Leads.Name", "Sales.Leads.id", "crm.notes.lead_id")


def test_catalog_tables_are_qualified_with_pg_catalog() -> None:
    assert PG.analyse("SELECT rolname FROM pg_roles").tables_read == ("pg_catalog.pg_roles",)


def test_function_sources_are_not_tables() -> None:
    a = PG.analyse("SELECT g FROM generate_series(1, 10) g")
    assert a.tables_read == () and a.columns == ()


def test_foreign_key_check_statement_from_pgaudit() -> None:
    check(
        PG.analyse('SELECT 1 FROM ONLY "public"."customers" x WHERE "id" OPERATOR(pg_catalog.=) $1 FOR KEY SHARE OF x'),
        statement_type="SELECT",
        tables_read=("public.customers",),
        columns=("public.customers.id",),
        sensitive_classes=(),
    )


def test_mysql_tables_are_qualified_with_the_database() -> None:
    check(
        MY.analyse("SELECT name, ssn FROM customers WHERE id = ?"),
        tables_read=("shop.customers",),
        columns=("shop.customers.id", "shop.customers.name", "shop.customers.ssn"),
        sensitive_classes=("id_number", "name"),
    )
    assert MY.analyse("SELECT * FROM other.t").tables_read == ("other.t",)


def test_mysql_without_a_database_matches_sensitive_columns_by_table_name() -> None:
    a = Analyser("mysql", sensitive=SENSITIVE).analyse("SELECT ssn FROM customers")
    assert a.tables_read == ("customers",)
    assert a.sensitive_classes == ("id_number",)


def test_mysql_into_outfile_is_an_export() -> None:
    a = MY.analyse("SELECT * FROM customers INTO OUTFILE '/tmp/research/x.csv' FIELDS TERMINATED BY ','")
    check(a, statement_type="SELECT", export=True, tables_read=("shop.customers",), parse_ok=True)
    assert a.sensitive_classes == ("id_number", "name")
    assert "/tmp" not in a.redacted


def test_mysql_replace_load_data_and_multi_table_delete() -> None:
    check(MY.analyse("REPLACE INTO customers (id, ssn) VALUES (1, 'x')"), statement_type="INSERT",
          tables_written=("shop.customers",), sensitive_classes=("id_number",))
    check(MY.analyse("LOAD DATA LOCAL INFILE '/tmp/in.csv' INTO TABLE customers"), statement_type="LOAD",
          tables_written=("shop.customers",))
    check(MY.analyse("DELETE o FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.ssn = ?"),
          tables_written=("shop.orders",), sensitive_classes=("id_number",))


def test_mysql_update_with_join() -> None:
    a = MY.analyse("UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.amount = 0 WHERE c.name = 'x'")
    assert a.tables_written == ("shop.orders",)
    assert a.tables_read == ("shop.customers",)
    assert a.sensitive_classes == ("name",)


def test_unparseable_statement_falls_back_to_keyword_tables() -> None:
    a = PG.analyse("SELECT ssn FROM customers WHERE id = 1 AND ((( unbalanced")
    assert not a.parse_ok
    assert a.statement_type == "SELECT"
    assert a.tables_read == ("public.customers",)
    assert set(a.sensitive_classes) == {"address", "id_number", "name", "phone"}  # conservative: the whole table
    assert a.redacted == "SELECT ssn FROM customers WHERE id = ? AND ((( unbalanced"


def test_sensitive_map_rejects_malformed_entries() -> None:
    with pytest.raises(ConfigError, match="schema.table.column"):
        SensitiveMap.of({"customers.ssn": "id_number"})
    with pytest.raises(ConfigError, match="lower-case"):
        SensitiveMap.of({"public.customers.ssn": "ID Number"})
    with pytest.raises(ConfigError, match="dialect"):
        Analyser("oracle")


@pytest.mark.parametrize(
    ("sql", "read", "written", "columns"),
    [
        ("TABLE cards", ("public.cards",), (), ("public.cards.customer_id", "public.cards.id", "public.cards.pan")),
        ("INSERT INTO cards (id, pan) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET pan = EXCLUDED.pan",
         (), ("public.cards",), ("public.cards.id", "public.cards.pan")),
        ("SELECT c.ssn, l.x FROM customers c, "
         "LATERAL (SELECT amount AS x FROM orders WHERE orders.customer_id = c.id) l",
         ("public.customers", "public.orders"), (),
         ("public.customers.id", "public.customers.ssn", "public.orders.amount", "public.orders.customer_id")),
        ("SELECT pan FROM generate_series(1, 3) g JOIN cards ON cards.id = g", ("public.cards",), (),
         ("public.cards.id", "public.cards.pan")),
        ("SELECT count(*) FROM customers WHERE ssn LIKE $1 ESCAPE '!'", ("public.customers",), (),
         ("public.customers.ssn",)),
        ("SELECT ssn, row_number() OVER (PARTITION BY name ORDER BY id) AS n FROM customers ORDER BY n",
         ("public.customers",), (), ("public.customers.id", "public.customers.name", "public.customers.ssn")),
        ("SELECT ARRAY(SELECT pan FROM cards)", ("public.cards",), (), ("public.cards.pan",)),
    ],
)
def test_more_postgres_shapes(sql: str, read: tuple[str, ...], written: tuple[str, ...],
                              columns: tuple[str, ...]) -> None:
    a = PG.analyse(sql)
    assert (a.parse_ok, a.tables_read, a.tables_written, a.columns) == (True, read, written, columns)
