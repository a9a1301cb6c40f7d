"""Shared pytest configuration. Fixtures live in tests/fixtures/, one module per service."""

pytest_plugins = [
    "tests.fixtures.pg",
    "tests.fixtures.haproxy",
    "tests.fixtures.server",
]
