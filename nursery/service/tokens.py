"""Bearer tokens: a signed, timestamped session id (itsdangerous).

A token only names a session; whether that session is still live is checked in the store
(or the instance's ``SessionCache``, which every revocation clears through the broker) on every
use, so revocation takes effect at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from nursery.errors import Unauthenticated

# Tokens whose signature was checked, kept so that a device's next request skips the HMAC
# and the decoding (a token is a pure function of the secret: only its expiry can change).
VERIFIED_CAPACITY = 10_000


class TokenSigner:
    def __init__(self, secret_key: str, max_age: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="nursery.session")
        self._max_age = max(1, round(max_age))  # itsdangerous counts whole seconds
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def issue(self, session_id: str) -> str:
        return self._serializer.dumps(session_id)

    def read(self, token: str) -> tuple[str, float]:
        """The session id and the unix time at which the token expires; raises
        ``Unauthenticated`` for a tampered, malformed or expired token."""
        known = self._verified.pop(token, None)
        if known is not None and time.time() < known[1]:
            self._verified[token] = known  # most recently used last
            return known
        try:
            value, issued = self._serializer.loads(
                token, max_age=self._max_age, return_timestamp=True
            )
        except SignatureExpired as exc:
            raise Unauthenticated("the token has expired") from exc
        except (BadSignature, ValueError, UnicodeError) as exc:
            raise Unauthenticated("the token is not valid") from exc
        if not isinstance(value, str):
            raise Unauthenticated("the token is not valid")
        # itsdangerous counts whole seconds and refuses once the age exceeds max_age.
        verified = value, issued.timestamp() + self._max_age + 1
        self._verified[token] = verified
        if len(self._verified) > VERIFIED_CAPACITY:
            self._verified.popitem(last=False)
        return verified
