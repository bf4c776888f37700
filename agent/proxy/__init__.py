"""custos's database proxy: a transparent PostgreSQL wire-protocol proxy that audits every statement.

pgwire (framing, message bodies) → audit (per-connection state machine → QueryRecord) → writer (events → spool);
session holds the forwarding protocols, server the listeners, source the agent's Source for it.
"""
