"""Every websocket close code nursery uses, on /ws and on the GraphQL socket alike.

The server closes a socket for one of these reasons, decided in one place
(``nursery.service.session``); clients decide from the code whether to reconnect
(``RECONNECT_NOW``, ``RECONNECT_LATER``) or stop (``FINAL``). The two exceptions every socket
speaks: ``ProtocolError`` (a frame or message not allowed: close with its code) and
``TransportClosed`` (the peer is gone). ``docs/protocol.md`` lists them
for users, and a test keeps that table and this module in step.
"""

from __future__ import annotations

# -- shared by both protocols -----------------------------------------------------------------
NORMAL = 1000  # the client said goodbye
PROTOCOL_VIOLATION = 1002  # not a valid websocket frame (bad masking, reserved bits, ...)
NOT_TEXT = 1007  # a text frame that is not UTF-8
BAD_MESSAGE = 1008  # /ws: a frame that is not a message of the protocol
TOO_BIG = 1009  # a message over the size limit
INTERNAL_ERROR = 1011  # /ws: the server failed (logged on the server)
RESTARTING = 1012  # the instance is going away: reconnect now and resume
TRY_AGAIN_LATER = 1013  # the database is down or the instance busy: reconnect after a backoff
UNAUTHENTICATED = 4001  # missing, bad, expired or revoked credentials: do not reconnect
TOO_SLOW = 4008  # the client did not keep up or went silent: reconnect and resume
RATE_LIMITED = 4029  # the client sent too many messages: reconnect after a backoff
TOO_MANY_SOCKETS = 4420  # the user has too many websockets open here: reconnect after a backoff

# -- graphql-transport-ws's own (the protocol fixes them) ------------------------------------
GRAPHQL_BAD_MESSAGE = 4400  # not a message of the protocol
GRAPHQL_UNAUTHORIZED = 4401  # subscribe before connection_ack
GRAPHQL_FORBIDDEN = 4403  # connection_init refused: bad or missing token
GRAPHQL_SUBPROTOCOL_NOT_ACCEPTABLE = 4406
GRAPHQL_INIT_TIMEOUT = 4408  # no connection_init in time
GRAPHQL_DUPLICATE_ID = 4409  # an operation id already in use
GRAPHQL_TOO_MANY_INITS = 4429  # a second connection_init
GRAPHQL_INTERNAL_ERROR = 4500  # the server failed (logged on the server)

# What a client should do after each code (anything else: reconnect after a backoff).
RECONNECT_NOW = frozenset({RESTARTING, TOO_SLOW})
FINAL = frozenset({UNAUTHENTICATED, GRAPHQL_FORBIDDEN})


class ProtocolError(Exception):
    """A message (or frame) the protocol does not allow: the socket closes with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TransportClosed(Exception):
    """The peer is gone: nothing more can be sent or received on the socket."""
