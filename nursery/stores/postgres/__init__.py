"""The PostgreSQL store (asyncpg, on the asyncio thread of ``stores.asyncio_thread``)."""

from nursery.stores.postgres.store import PostgresStore as PostgresStore
from nursery.stores.postgres.store import open_postgres_store as open_postgres_store
