"""The raw connections of the hot paths after their server dropped them (a database restart)."""
import psycopg2
import pytest

from storage.direct import DirectConnection, connector
from storage.errors import StorageUnavailable
from storage.sql import Dialect


@pytest.fixture
def conn_and_killer(postgres_url):
    from config import load_settings
    from storage.database import bind

    db = bind(load_settings({"DATABASE_URL": postgres_url}, dotenv=None))
    conn = DirectConnection(connector(db), Dialect.of(db))
    conn.execute("CREATE TABLE probe (n INTEGER)")
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True

    def kill():
        (pid,) = conn.execute("SELECT pg_backend_pid()")[0]
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))

    yield conn, kill
    conn.close()
    admin.close()
    db.disconnect()


def test_a_read_on_a_link_the_server_dropped_is_sent_again_on_a_new_one(conn_and_killer):
    conn, kill = conn_and_killer
    kill()
    assert conn.execute("SELECT 41 + 1") == [(42,)]


def test_a_write_on_a_link_the_server_dropped_is_never_sent_twice(conn_and_killer):
    conn, kill = conn_and_killer
    kill()
    with pytest.raises(StorageUnavailable):
        conn.execute("INSERT INTO probe (n) VALUES (1)")
    assert conn.execute("SELECT COUNT(*) FROM probe") == [(0,)]  # and the next call reconnects
