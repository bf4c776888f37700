"""Native audit-log sources: pgAudit (PostgreSQL stderr log or csvlog) and MariaDB's server_audit file.

- follow.py: a file follower through rotation (rename, copytruncate) with crash-safe positions;
- pgaudit.py, pgaudit_stderr.py, pgaudit_csv.py: pgAudit lines to db.query / db.session events;
- mariadb.py: server_audit lines to db.query / db.session events;
- source.py: the agent Source that spools events and position in one transaction; config.py: its sections;
- _sql.py: the one door to the shared SQL analysis (fingerprint, redaction); _time.py: log timestamps.

docs/native-audit-logs.md describes setup, configuration and what the native logs cannot tell.
"""
