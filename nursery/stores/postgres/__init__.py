"""The PostgreSQL store (asyncpg through trio-asyncio)."""

from nursery.stores.postgres.store import PostgresStore as PostgresStore
from nursery.stores.postgres.store import open_postgres_store as open_postgres_store
