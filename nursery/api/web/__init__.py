"""The web client, served at / (being built: see the web client issue)."""

from __future__ import annotations

from quart import Blueprint


def web_blueprint() -> Blueprint:
    return Blueprint("web", __name__)
