import pytest


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server per test worker; each test takes a new database."""
    from pg import Postgres
    server = Postgres()
    yield server
    server.stop()
