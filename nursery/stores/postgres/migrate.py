"""Versioned SQL migrations, applied at startup.

Safe when several instances start at once: the whole run holds a transaction-level advisory
lock, so one instance applies what is missing and the others then find nothing to do.
Runs on the asyncio side (called from inside a store operation).
"""

from __future__ import annotations

from importlib import resources

import asyncpg

MIGRATION_LOCK_ID = 7_263_001  # arbitrary, constant: the advisory lock all instances share


def migration_scripts() -> list[tuple[str, str]]:
    """``(version, sql)`` pairs in the order they must run (by file name)."""
    folder = resources.files("nursery.stores.postgres") / "migrations"
    scripts = [(p.name.removesuffix(".sql"), p.read_text()) for p in folder.iterdir()]
    return sorted(s for s in scripts if s[0][0].isdigit())


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_scripts():
            if version not in done:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied_now.append(version)
    return applied_now
