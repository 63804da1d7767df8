"""One typed settings object, read from the environment once and passed down.

Every field can be set as ``NURSERY_<FIELD>`` (e.g. ``NURSERY_DATABASE_URL``); command-line
flags override the environment. Every value is parsed and checked when the settings are made
(from the environment or in code, where a field may also be given as its environment string):
a bad one raises ``ConfigError`` naming the variable and what it accepts, so a typo fails
loudly at startup instead of quietly meaning something else (``ture`` is not false).
``nursery --help`` prints the table (``Settings.describe``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nursery.errors import NurseryError
from nursery.rates import Rate, parse_duration, parse_rate

ENV_PREFIX = "NURSERY_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(NurseryError):
    """A setting's value is not valid; the message names the variable and what it accepts."""


@dataclass(frozen=True, slots=True)
class Kind:
    """How a setting is written (``accepts``, for messages and --help) and parsed."""

    accepts: str
    parse: Callable[[str], Any]
    check: Callable[[Any], bool] = lambda value: True


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _url(*schemes: str) -> Kind:
    def parse(text: str) -> str:
        if urlsplit(text).scheme not in schemes:
            raise ValueError(text)
        return text

    return Kind(" or ".join(f"{s}://..." for s in schemes), parse)


def _choice(*choices: str) -> Kind:
    def parse(text: str) -> str:
        for choice in choices:
            if text.strip().lower() == choice.lower():
                return choice
        raise ValueError(text)

    return Kind(" | ".join(choices), parse)


TEXT = Kind("text", str)
PATH = Kind("a path", Path)
PORT = Kind("a port, 0-65535 (0: any free port)", int, lambda v: 0 <= v <= 65535)
COUNT = Kind("a whole number >= 1", int, lambda v: v >= 1)
SECONDS = Kind("seconds > 0: 2.5, 500ms, 30s, 5m, 2h, 7d", parse_duration, lambda v: v > 0)
SECONDS_OR_ZERO = Kind("seconds >= 0: 0, 2.5, 500ms, 30s, 5m", parse_duration, lambda v: v >= 0)
DAYS_OR_ZERO = Kind("days >= 0: 400, 30.5", float, lambda v: v >= 0)
BOOL = Kind("true | false (also 1/0, yes/no, on/off)", _bool)
NETWORKS = Kind(
    "comma-separated addresses or networks: 127.0.0.0/8,::1,10.0.0.5; or none",
    lambda text: tuple(ipaddress.ip_network(part.strip(), strict=False)
                       for part in text.split(",") if part.strip().lower() not in ("", "none")),
)
RATE = Kind("COUNT/PERIOD: 10/60s, 10/1m, 1000/1h, 20/1", parse_rate)
# Tokens are signed with it (HMAC): a short key can be guessed offline from one token.
MIN_SECRET_LENGTH = 32
SECRET = Kind(
    f"at least {MIN_SECRET_LENGTH} characters, e.g. the output of"
    " python3 -c 'import secrets; print(secrets.token_urlsafe(48))'",
    str, lambda v: len(v) >= MIN_SECRET_LENGTH,
)


def _setting(default: Any, kind: Kind, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc, "kind": kind})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("127.0.0.1", TEXT, "address to listen on")
    port: int = _setting(4000, PORT, "port to listen on")
    data_dir: Path = _setting(
        Path(".nursery"), PATH, "embedded database and generated secret live here"
    )
    database_url: str | None = _setting(
        None, _url("postgresql", "postgres"),
        "PostgreSQL URL; unset: start a private PostgreSQL in the data dir",
    )
    redis_url: str | None = _setting(
        None, _url("redis", "rediss"),
        "Redis URL for the broker between instances; unset: in-process broker. A Redis Cluster"
        " (NURSERY_REDIS_CLUSTER) may be named by several nodes, comma-separated",
    )
    redis_cluster: bool = _setting(
        False, BOOL,
        "NURSERY_REDIS_URL names a Redis Cluster node: shard the pub/sub by user (SSUBSCRIBE/SPUBLISH)",
    )
    mongo_url: str | None = _setting(
        None, _url("mongodb", "mongodb+srv"),
        "MongoDB URL (a replica set: transactions) for todos, audit log and analytics;"
        " database from the URL's path, default nursery; unset: all in PostgreSQL",
    )
    secret_key: str | None = _setting(
        None, SECRET, "token signing key; unset: generated and kept in the data dir"
    )
    instance_name: str | None = _setting(None, TEXT, "name shown to clients; default host:port")
    token_max_age: float = _setting(30 * 86400, SECONDS, "token lifetime")
    tombstone_retention: float = _setting(
        7 * 86400, SECONDS, "how long deleted todos are remembered for resume"
    )
    max_body_bytes: int = _setting(64 * 1024, COUNT, "largest request body, bytes")
    http_request_timeout: float = _setting(
        30.0, SECONDS,
        "a request (head and body) must arrive whole within this from its first byte, however "
        "it trickles (else 408 and close)",
    )
    http_header_timeout: float = _setting(
        10.0, SECONDS,
        "a request's line and headers must arrive within this from its first byte (else 408 "
        "and close); also the body's head start before NURSERY_HTTP_BODY_MIN_RATE applies",
    )
    http_body_min_rate: int = _setting(
        1024, COUNT,
        "bytes per second a request body must keep up on average (else 408 and close)",
    )
    http_send_timeout: float = _setting(
        10.0, SECONDS, "a response the client does not take within this is dropped, its connection closed"
    )
    http_idle_timeout: float = _setting(
        75.0, SECONDS,
        "an idle keep-alive connection is closed after this (longer than the proxy's own)",
    )
    http_max_url_bytes: int = _setting(8 * 1024, COUNT, "longest request URL, bytes (else 414)")
    http_max_headers: int = _setting(
        100, COUNT, "most header fields (trailers included) in a request (else 431)"
    )
    http_max_header_bytes: int = _setting(
        32 * 1024, COUNT,
        "a request's head, chunk-size lines and trailers together, bytes, counted as they "
        "arrive (else 431)",
    )
    http_connections_per_client: int = _setting(
        256, COUNT,
        "open connections per client address, counted at accept (more: 429 and close); with "
        "NURSERY_TRUST_PROXY_HEADERS, open websockets per address the proxy saw (more: 429)",
    )
    http_uncapped_peers: tuple[IPNetwork, ...] = _setting(
        "127.0.0.0/8,::1", NETWORKS,
        "peers never capped by NURSERY_HTTP_CONNECTIONS_PER_CLIENT (the proxy, load generators)",
    )
    ws_max_message_bytes: int = _setting(
        64 * 1024, COUNT, "largest websocket message, bytes (more: closed with 1009)"
    )
    ws_max_fragments: int = _setting(
        1024, COUNT, "frames of one websocket message, empty ones too (more: closed with 1009)"
    )
    ws_frame_rate: Rate = _setting(
        Rate(2000, 1), RATE,
        "websocket frames of any kind a client may send, pings and fragments included"
        " (more: closed with 1008)",
    )
    ws_max_sockets_per_user: int = _setting(
        50, COUNT,
        "open websockets per user on one instance, /ws and GraphQL together (more: the new"
        " one is closed with 4420)",
    )
    ws_queue_size: int = _setting(
        256, COUNT, "messages waiting for a websocket before it is closed as too slow"
    )
    ws_send_timeout: float = _setting(
        10.0, SECONDS, "a websocket that takes this long to take its messages is closed"
    )
    ws_hello_timeout: float = _setting(5.0, SECONDS, "time to send hello (connection_init)")
    ws_ping_interval: float = _setting(
        20.0, SECONDS, "silence from a client after which the server pings it"
    )
    ws_ping_timeout: float = _setting(
        20.0, SECONDS, "further silence after a ping that closes a websocket"
    )
    ws_setup_concurrency: int = _setting(
        16, COUNT,
        "connections set up at once (auth, backlog); a reconnect storm queues, then gets "
        "1013 after 10 s",
    )
    presence_ttl: float = _setting(
        15.0, SECONDS, "a crashed instance's devices drop from presence after this"
    )
    drain_delay: float = _setting(
        0.0, SECONDS_OR_ZERO, "on SIGTERM, answer /readyz 503 this long before closing the listener"
    )
    shutdown_timeout: float = _setting(15.0, SECONDS, "deadline for the whole graceful shutdown")
    session_cache_ttl: float = _setting(
        10.0, SECONDS_OR_ZERO,
        "seconds a checked session is trusted without asking the database (revocations "
        "reach every instance through the broker at once; 0 turns the cache off)",
    )
    db_pool_size: int = _setting(10, COUNT, "PostgreSQL connections per instance")
    db_timeout: float = _setting(
        5.0, SECONDS,
        "timeout of one store operation, retries during a database failover included",
    )
    db_connect_timeout: float = _setting(
        2.0, SECONDS,
        "timeout of opening one PostgreSQL connection, per host of NURSERY_DATABASE_URL",
    )
    db_sync_strict: bool = _setting(
        True, BOOL,
        "cluster up --ha: while the synchronous standby is down, refuse writes (true: no"
        " acknowledged write can be lost) or let the primary accept them alone (false)",
    )
    audit_buffer_size: int = _setting(
        10_000, COUNT, "audit entries waiting to be written; more are dropped (and counted)"
    )
    audit_batch_size: int = _setting(500, COUNT, "audit entries per write")
    audit_retention_days: float = _setting(
        400.0, DAYS_OR_ZERO,
        "audit entries older than this are deleted, in batches, one instance at a time"
        " (0 keeps them forever; the analytics look back up to 366 days)",
    )
    broker_timeout: float = _setting(3.0, SECONDS, "timeout of one broker operation")
    password_min_length: int = _setting(8, COUNT, "shortest accepted password")
    login_rate_per_account: Rate = _setting(
        Rate(10, 60), RATE, "login attempts per account"
    )
    login_rate_per_client: Rate = _setting(
        Rate(30, 60), RATE, "login attempts per client address"
    )
    register_rate_per_client: Rate = _setting(
        Rate(20, 600), RATE, "registrations per client address"
    )
    write_rate_per_user: Rate = _setting(Rate(1000, 60), RATE, "todo writes per user")
    ws_message_rate: Rate = _setting(
        Rate(20, 1), RATE, "messages a websocket client may send (more: closed with 4029)"
    )
    cors_origins: str = _setting(
        "", TEXT, "comma-separated origins allowed to call the API from a browser"
    )
    trust_proxy_headers: bool = _setting(
        False, BOOL, "take the client address from X-Forwarded-For (only behind a proxy)"
    )
    log_level: str = _setting("INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "log level")
    log_format: str = _setting(
        "text", _choice("text", "json"), "log lines as readable text or one JSON object each"
    )

    def __post_init__(self) -> None:
        """Parse what was given as a string; check every value (``ConfigError``)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            kind: Kind = f.metadata["kind"]
            try:
                if isinstance(value, str):
                    value = kind.parse(value)
                    object.__setattr__(self, f.name, value)
                valid = kind.check(value)
            except (ValueError, TypeError):
                valid = False
            if not valid:
                given = f" ({len(value)} characters)" if kind is SECRET else f"={value!r}"
                raise ConfigError(f"{_env_name(f.name)}{given} is not valid: expected {kind.accepts}")

    @property
    def name(self) -> str:
        return self.instance_name or f"{self.host}:{self.port}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every field from ``NURSERY_<FIELD>`` (empty means unset); ``overrides``
        (non-None) win. Raises ``ConfigError`` for a value that is not valid."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(_env_name(f.name), "")
            if raw != "":
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def describe(cls) -> str:
        lines = []
        for f in dataclasses.fields(cls):
            default = "" if f.default is None else f"; default {f.default}"
            kind: Kind = f.metadata["kind"]
            lines.append(f"  {_env_name(f.name):32} {f.metadata['doc']}")
            lines.append(f"  {'':32}   ({kind.accepts}{default})")
        return "\n".join(lines)


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()
