"""The Python client: one device's live copy of one user's todos, kept in sync over ``/ws``.

Three layers, the first two without I/O:

- ``Mirror``: the todos by id and the revision they reflect; applies ``change`` frames.
- ``Backoff``: when to try again after a connection ended (full-jitter exponential backoff).
- ``SyncClient``: the I/O. The gap-free start of docs/protocol.md (``GET /api/todos``, then ``hello``
  with ``since`` = the list's ``rev``), the backlog, live changes, heartbeats, and reconnects
  that resume from the last revision applied.

Exceptions (everything else that can go wrong on the network is retried, never raised)::

    ClientError                   anything this module raises on purpose
     ├── SessionEnded             the server ended this session for good (close 4001 or HTTP 401):
     │                            the token is revoked or invalid; log in again
     ├── RequestFailed            a REST call answered an unexpected status (e.g. a wrong password
     │                            at ``login``, or a bug); carries ``status`` and the error body
     └── ProtocolViolation        the server sent a frame this client cannot understand

A close code → what ``SyncClient`` does: 4001 → raise ``SessionEnded``; 1012 (restarting) and
4008 (too slow) after a welcome → reconnect at once (``restart_jitter``) and resume; anything
else (1011, 1013, 4029, 1006, no close frame, timeouts, refused connections, HTTP 429/5xx) →
backoff, then resume.
"""

from nursery.client.backoff import Backoff as Backoff
from nursery.client.backoff import Ending as Ending
from nursery.client.errors import ClientError as ClientError
from nursery.client.errors import ProtocolViolation as ProtocolViolation
from nursery.client.errors import RequestFailed as RequestFailed
from nursery.client.errors import SessionEnded as SessionEnded
from nursery.client.mirror import Mirror as Mirror
from nursery.client.sync import ClientConfig as ClientConfig
from nursery.client.sync import SyncClient as SyncClient
from nursery.client.sync import login as login
from nursery.client.sync import parse_frame as parse_frame
from nursery.client.sync import ws_url as ws_url
