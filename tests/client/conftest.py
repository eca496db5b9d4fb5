# The live tests run the client against the system tests' stack (tests/system/conftest.py).
from tests.system.conftest import stack, system_database

__all__ = ["stack", "system_database"]
