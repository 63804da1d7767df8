"""The instance's logs: readable text by default, one JSON object per line when asked
(``NURSERY_LOG_FORMAT=json``), and the access log: one line per HTTP request and one per
websocket session.

Every line carries the instance's name; a line written while a request is being answered
carries its request id too (``X-Request-ID``: the client's if it sent a sane one, else ours,
returned in the response), so an error logged deep down can be matched with its request.

Lines are written in batches (``_Batched``): one write per line cost ~5 % of an instance's
CPU at a few hundred requests a second here. A warning or an error is written at once, with
whatever waited before it; info lines wait at most ``FLUSH_INTERVAL`` (``flush_regularly``).

    http POST /api/todos/<todo_id> 201 2.1ms user=… session=… rid=…      (text)
    {"ts": "…", "level": "info", "logger": "nursery.access", "event": "http", "method": "POST",
     "route": "/api/todos/<todo_id>", "status": 201, "ms": 2.1, "user": "…", "rid": "…", …}
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from nursery import ids

ACCESS = "nursery.access"
FLUSH_INTERVAL = 0.25  # seconds an info line may wait to be written
BATCH_LINES = 256  # lines written at once at the most
FORMATS = ("text", "json")
MAX_REQUEST_ID = 128
TEXT_FIELDS = ("user", "session", "in", "out", "reason")  # the rest is in the message

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
access_log = logging.getLogger(ACCESS)


def new_request_id(offered: str | None) -> str:
    """The client's ``X-Request-ID`` if it is short and printable, else a new one."""
    if offered and len(offered) <= MAX_REQUEST_ID and offered.isprintable() and " " not in offered:
        return offered
    return ids.request_id()


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs, errors and status
    lines: the one place a URL with credentials is made fit to show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def tag_records() -> None:
    """Every log record made from now on carries the request id of the task that made it
    (``rid``; empty outside a request), whatever handler writes it. Idempotent."""
    make = logging.getLogRecordFactory()
    if getattr(make, "tags_request_ids", False):
        return

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.rid = request_id.get()
        return record

    tagged.tags_request_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(tagged)


class _Context(logging.Filter):
    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        record.instance = self.instance
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(instance)s %(name)s: %(message)s")
        self._second = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if self._second[0] != second:  # strftime once a second, not once a line
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        return f"{self._second[1]},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None) or {}
        extra = [f"{k}={fields[k]}" for k in TEXT_FIELDS if fields.get(k) not in (None, "")]
        rid = getattr(record, "rid", "")
        if rid:
            extra.append(f"rid={rid}")
        return f"{text} {' '.join(extra)}" if extra else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "instance": getattr(record, "instance", ""),
            "message": record.getMessage(),
        }
        rid = getattr(record, "rid", "")
        if rid:
            body["rid"] = rid
        body.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, separators=(",", ":"))


class _Batched(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches (see the module)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        if len(self._lines) >= BATCH_LINES or record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._lines:
                lines, self._lines = self._lines, []
                self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()


def flush() -> None:
    """Write the lines waiting (every handler's)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


async def flush_regularly(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Every ``FLUSH_INTERVAL``, write what waits; until cancelled (then once more)."""
    task_status.started()
    try:
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            flush()
    finally:
        flush()


def configure(level: str, form: str, instance: str) -> None:
    """Send every log line to stderr in ``form`` ("text" or "json"), tagged with ``instance``
    (and, by ``tag_records``, with its request id)."""
    tag_records()
    handler = _Batched()
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    handler.addFilter(_Context(instance))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def http(method: str, route: str, path: str, status: int, seconds: float, who: Any) -> None:
    """The access log line of one HTTP request (``who``: the principal, if authenticated)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    ms = round(seconds * 1000, 1)
    fields = {"event": "http", "method": method, "route": route, "path": path,
              "status": status, "ms": ms, **_ids(who)}
    access_log.info("http %s %s %d %.1fms", method, route, status, ms, extra={"fields": fields})


def websocket(
    path: str, code: int | None, reason: str, seconds: float, frames_in: int, frames_out: int,
    who: Any,
) -> None:
    """The access log line of one websocket session (``code`` None: the client left)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {"event": "websocket", "path": path, "close": code, "reason": reason,
              "seconds": round(seconds, 1), "in": frames_in, "out": frames_out, **_ids(who)}
    access_log.info("websocket %s closed %s after %.1fs", path, code if code is not None else "by the client",
                    seconds, extra={"fields": fields})


def _ids(who: Any) -> dict[str, str]:
    if who is None:
        return {}
    return {"user": who.user_id, "session": who.session_id}
