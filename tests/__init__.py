"""Sluice's tests, in the packages of `stream/` they test (`conftest.py`: shared fixtures)."""
