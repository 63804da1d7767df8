"""The edge's routes: HTTP handlers and websocket endpoints by path.

Patterns are literal paths with ``<name>`` segments (``/api/todos/<todo_id>``), which match
one non-empty path segment and are passed to the handler by name. A path that matches a
pattern but not its method is a 405 (with ``Allow``); a path nobody here claims goes to the
fallback (the Quart app).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nursery.edge.http import Request, Response
from nursery.edge.websocket import WebSocket


@dataclass(frozen=True, slots=True)
class SocketOutcome:
    """How a websocket session ended, for the access log (``code`` None: the client left)."""

    code: int | None
    reason: str
    frames_in: int
    frames_out: int


Handler = Callable[..., Awaitable[Response]]
SocketHandler = Callable[[Request, WebSocket], Awaitable[SocketOutcome]]

_PARAM = re.compile(r"<([a-z_]+)>")


@dataclass(frozen=True, slots=True)
class SocketRoute:
    handler: SocketHandler
    subprotocol: str | None  # the one the client must offer (None: none is negotiated)
    plain_http: bool  # the path also answers plain requests (through the fallback)
    # The close code for a client that did not offer ``subprotocol``: the protocol's own
    # (graphql-transport-ws: 4406), handed in by the API so that the edge knows no protocol.
    unacceptable_code: int = 1002


@dataclass(frozen=True, slots=True)
class Match:
    pattern: str
    handler: Handler | None  # None: the path exists, not with this method
    params: dict[str, str]
    allowed: tuple[str, ...]


def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for segment in pattern.split("/"):
        param = _PARAM.fullmatch(segment)
        parts.append(f"(?P<{param.group(1)}>[^/]+)" if param else re.escape(segment))
    return re.compile("/".join(parts) + r"\Z")


class Router:
    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], str, dict[str, Handler]]] = []
        self._sockets: dict[str, SocketRoute] = {}

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._methods(pattern)[method] = handler
            return handler

        return register

    def get(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("GET", pattern)

    def post(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("POST", pattern)

    def patch(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("PATCH", pattern)

    def delete(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("DELETE", pattern)

    def websocket(
        self, path: str, *, subprotocol: str | None = None, unacceptable_code: int = 1002,
        plain_http: bool = False,
    ) -> Callable[[SocketHandler], SocketHandler]:
        """Register a websocket endpoint. ``subprotocol``: the one the client must offer; one
        that does not is closed with ``unacceptable_code`` right after the upgrade."""
        def register(handler: SocketHandler) -> SocketHandler:
            self._sockets[path] = SocketRoute(handler, subprotocol, plain_http, unacceptable_code)
            return handler

        return register

    def include(self, other: Router) -> None:
        """Take every route of ``other`` (one router per API module, one for the edge)."""
        for path, methods in other._exact.items():
            self._exact.setdefault(path, {}).update(methods)
        self._patterns.extend(other._patterns)
        self._sockets.update(other._sockets)

    def _methods(self, pattern: str) -> dict[str, Handler]:
        if "<" not in pattern:
            return self._exact.setdefault(pattern, {})
        for _, known, methods in self._patterns:
            if known == pattern:
                return methods
        methods = {}
        self._patterns.append((_compile(pattern), pattern, methods))
        return methods

    def match(self, method: str, path: str) -> Match | None:
        """The route for ``method`` and ``path`` (HEAD is served by GET); None if no pattern
        matches the path."""
        methods = self._exact.get(path)
        pattern, params = path, {}
        if methods is None:
            for regex, known, candidates in self._patterns:
                found = regex.match(path)
                if found is not None:
                    methods, pattern, params = candidates, known, found.groupdict()
                    break
            else:
                return None
        handler = methods.get("GET" if method == "HEAD" else method)
        return Match(pattern, handler, params, tuple(sorted(methods)))

    def socket(self, path: str) -> SocketRoute | None:
        return self._sockets.get(path)

    def patterns(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every HTTP route, for the API description's test."""
        routes = [(path, tuple(sorted(m))) for path, m in self._exact.items()]
        routes += [(pattern, tuple(sorted(m))) for _, pattern, m in self._patterns]
        return routes
