"""The project's error root and the errors the agent side raises."""

from __future__ import annotations


class CustosError(ValueError):
    """Root of every error custos raises on purpose; the message says what to do."""


class ConfigError(CustosError):
    """A configuration file or environment variable is wrong."""


class SpoolError(CustosError):
    """The on-disk spool cannot be used."""


class SpoolFull(SpoolError):
    """The spool is at its bound and its overflow policy is `block`."""


class ShipError(CustosError):
    """The collector refused a batch for a reason retrying will not fix."""
