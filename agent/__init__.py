"""custos agent: sources that see customer-data access, a durable spool, and a shipper to the collector.

Nothing in this package imports the collector; it must install and run with the light `agent` extra alone.
"""

__version__ = "0.1.0"
