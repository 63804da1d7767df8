"""One typed settings object, read from the environment once and passed down.

Every field can be set as ``NURSERY_<FIELD>`` (e.g. ``NURSERY_DATABASE_URL``); command-line
flags override the environment. Durations are in seconds, sizes in bytes. ``nursery --help``
prints this table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "NURSERY_"


def _doc(text: str) -> Any:
    return {"doc": text}


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata=_doc("address to listen on"))
    port: int = field(default=4000, metadata=_doc("port to listen on"))
    data_dir: Path = field(
        default=Path(".nursery"),
        metadata=_doc("embedded database and generated secret live here"),
    )
    database_url: str | None = field(
        default=None,
        metadata=_doc("PostgreSQL URL; unset: start a private PostgreSQL in the data dir"),
    )
    redis_url: str | None = field(
        default=None,
        metadata=_doc("Redis URL for the broker between instances; unset: in-process broker"),
    )
    mongo_url: str | None = field(
        default=None,
        metadata=_doc(
            "MongoDB URL (a replica set: transactions) for todos, audit log and analytics;"
            " database from the URL's path, default nursery; unset: all in PostgreSQL"
        ),
    )
    secret_key: str | None = field(
        default=None,
        metadata=_doc("token signing key; unset: generated and kept in the data dir"),
    )
    instance_name: str | None = field(
        default=None, metadata=_doc("name shown to clients; default host:port")
    )
    token_max_age: float = field(default=30 * 86400, metadata=_doc("token lifetime"))
    tombstone_retention: float = field(
        default=7 * 86400, metadata=_doc("how long deleted todos are remembered for resume")
    )
    max_body_bytes: int = field(default=64 * 1024, metadata=_doc("largest request body"))
    ws_max_message_bytes: int = field(default=64 * 1024, metadata=_doc("largest ws frame"))
    ws_queue_size: int = field(
        default=256, metadata=_doc("events queued per websocket before it is closed as slow")
    )
    ws_send_timeout: float = field(
        default=10.0, metadata=_doc("a websocket write blocked this long closes it as slow")
    )
    ws_hello_timeout: float = field(default=5.0, metadata=_doc("time to send hello"))
    ws_ping_interval: float = field(default=20.0, metadata=_doc("server ping period"))
    ws_ping_timeout: float = field(
        default=20.0, metadata=_doc("silence after a ping that closes a websocket")
    )
    ws_setup_concurrency: int = field(
        default=16,
        metadata=_doc(
            "connections set up at once (auth, backlog); a reconnect storm queues, then gets "
            "1013 after 10 s"
        ),
    )
    presence_ttl: float = field(
        default=15.0, metadata=_doc("a crashed instance's devices drop from presence after this")
    )
    drain_delay: float = field(
        default=0.0,
        metadata=_doc("on SIGTERM, answer /readyz 503 this long before closing the listener"),
    )
    shutdown_timeout: float = field(
        default=15.0, metadata=_doc("deadline for the whole graceful shutdown")
    )
    session_cache_ttl: float = field(
        default=10.0,
        metadata=_doc(
            "seconds a checked session is trusted without asking the database (revocations "
            "reach every instance through the broker at once; 0 turns the cache off)"
        ),
    )
    db_pool_size: int = field(default=10, metadata=_doc("PostgreSQL connections per instance"))
    db_timeout: float = field(default=5.0, metadata=_doc("timeout of one store operation"))
    audit_buffer_size: int = field(
        default=10_000,
        metadata=_doc("audit entries waiting to be written; more are dropped (and counted)"),
    )
    audit_batch_size: int = field(default=500, metadata=_doc("audit entries per write"))
    audit_retention_days: float = field(
        default=400.0,
        metadata=_doc(
            "audit entries older than this are deleted, in batches, one instance at a time"
            " (0 keeps them forever; the analytics look back up to 366 days)"
        ),
    )
    broker_timeout: float = field(default=3.0, metadata=_doc("timeout of one broker operation"))
    password_min_length: int = field(default=8, metadata=_doc("shortest accepted password"))
    login_rate_per_account: str = field(
        default="10/60", metadata=_doc("login attempts per account (COUNT/SECONDS)")
    )
    login_rate_per_client: str = field(
        default="30/60", metadata=_doc("login attempts per client address")
    )
    register_rate_per_client: str = field(
        default="20/600", metadata=_doc("registrations per client address")
    )
    write_rate_per_user: str = field(default="1000/60", metadata=_doc("todo writes per user"))
    ws_message_rate: str = field(
        default="20/1", metadata=_doc("frames a websocket may send (more: closed with 4029)")
    )
    cors_origins: str = field(
        default="", metadata=_doc("comma-separated origins allowed to call the API from a browser")
    )
    trust_proxy_headers: bool = field(
        default=False,
        metadata=_doc("take the client address from X-Forwarded-For (only behind a proxy)"),
    )
    log_level: str = field(default="INFO", metadata=_doc("DEBUG, INFO, WARNING, ERROR"))

    @property
    def name(self) -> str:
        return self.instance_name or f"{self.host}:{self.port}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every field from ``NURSERY_<FIELD>``; ``overrides`` (non-None) win.

        A value that does not parse fails loudly with the variable's name.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in environ and environ[key] != "":
                values[f.name] = _parse(key, environ[key], f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def describe(cls) -> str:
        lines = []
        for f in dataclasses.fields(cls):
            default = "" if f.default is None else f" (default {f.default})"
            lines.append(f"  {ENV_PREFIX + f.name.upper():32} {f.metadata['doc']}{default}")
        return "\n".join(lines)


def _parse(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError:
        raise SystemExit(f"nursery: {key}={raw!r} is not a valid {type(default).__name__}")
