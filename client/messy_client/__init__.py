"""Messy's client library: `MessyClient` (writes, batches, status reads, jobs) and the `messy`
command line (messy_client.cli). Standard library only."""

__version__ = "1.0.0"

from .client import MessyClient, MessyError
from .ids import uuid7

__all__ = ["MessyClient", "MessyError", "__version__", "uuid7"]
