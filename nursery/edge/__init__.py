"""The edge: the instance's one listening port, on Trio, for HTTP/1.1 and websockets.

    listener   ``Edge``: accepting, answering, the request log and metrics, draining
    http       one connection's HTTP/1.1: answering in order, deadlines, writing responses
    reader     requests from bytes (httptools), their rules and byte budgets; no I/O
    router     the edge's routes: REST handlers and websocket endpoints
    websocket  RFC 6455 on a socket: reading frames within budgets, writing, closing
    frames     RFC 6455's wire format and ``FrameLimits``; no I/O
    peers      a request's client address, open connections per address
    asgi       what the edge does not serve itself goes to the Quart app

Why not Hypercorn: see bench/README.md (memory and CPU per websocket and per request).
"""

from nursery.edge.http import Request as Request
from nursery.edge.http import Response as Response
from nursery.edge.listener import Edge as Edge
from nursery.edge.listener import EdgeLimits as EdgeLimits
from nursery.edge.router import Router as Router
from nursery.edge.router import SocketOutcome as SocketOutcome
