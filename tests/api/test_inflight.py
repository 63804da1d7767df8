"""The in-flight wrapper around the ASGI app (api/inflight.py)."""

from __future__ import annotations

from typing import Any

import pytest
from quart.wrappers.base import ClientDisconnectedError
from quart_trio import QuartTrio

from nursery.api.inflight import InFlight, track_in_flight


async def _no_message() -> dict[str, Any]:
    raise AssertionError("not called")


async def _ignore(message: Any) -> None:
    pass


@pytest.mark.parametrize("error", [
    ClientDisconnectedError(),
    ExceptionGroup("from Quart-Trio's request nursery", [ClientDisconnectedError()]),
])
async def test_a_client_gone_before_its_answer_is_not_an_app_error(error: BaseException) -> None:
    """Quart-Trio raises ClientDisconnectedError (in a group) when a client left just before
    the answer was sent; out of the app, Hypercorn logged each as "Error in ASGI Framework"."""
    app = QuartTrio(__name__)

    async def leaves(scope: Any, receive: Any, send: Any) -> None:
        raise error

    app.asgi_app = leaves  # type: ignore[method-assign]
    in_flight = InFlight()
    track_in_flight(app, in_flight, lambda: False)
    await app.asgi_app({"type": "http"}, _no_message, _ignore)
    assert in_flight.count == 0


async def test_other_errors_still_come_out() -> None:
    app = QuartTrio(__name__)

    async def breaks(scope: Any, receive: Any, send: Any) -> None:
        raise ExceptionGroup("x", [ClientDisconnectedError(), ValueError("a bug")])

    app.asgi_app = breaks  # type: ignore[method-assign]
    in_flight = InFlight()
    track_in_flight(app, in_flight, lambda: False)
    with pytest.raises(ExceptionGroup) as raised:
        await app.asgi_app({"type": "http"}, _no_message, _ignore)
    assert [type(e) for e in raised.value.exceptions] == [ValueError]
    assert in_flight.count == 0
