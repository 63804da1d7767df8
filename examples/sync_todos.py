"""A device that keeps a live copy of your todos with ``nursery.client`` (docs/client.md).

    python examples/sync_todos.py --url http://127.0.0.1:4000 --email ada@example.com
    (the password from $NURSERY_PASSWORD, or asked; --register creates the account first)

It signs in, syncs, adds a todo through the REST API (as another device would) and waits for
it to arrive live, then goes offline, lets "another device" tick the todo off meanwhile, and
resumes from the last revision it applied: only that change comes, nothing is read twice.
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

import httpx
import trio

from nursery.client import SyncClient, login


def show(todo: dict[str, Any]) -> str:
    return f"[{'x' if todo['done'] else ' '}] {todo['title']}"


async def main(url: str, email: str, password: str, register: bool) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        if register:
            r = await http.post("/api/auth/register", json={"email": email, "password": password})
            r.raise_for_status()
        # 1. Sign in: a token for a new session ("device") of this user.
        token = await login(url, email, password, device="example")
        print(f"signed in as {email}")
        headers = {"Authorization": f"Bearer {token}"}

        # 2. Sync. on_event sees every frame after the client handled it; the client keeps
        # client.mirror (todos by id, and the revision they reflect) up to date.
        def on_event(frame: dict[str, Any]) -> None:
            if frame["type"] == "change":
                what = show(frame["todo"]) if frame["op"] == "upsert" else frame["id"]
                print(f"  rev {frame['rev']}: {frame['op']} {what}")

        client = SyncClient(url, token, on_event=on_event)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)  # returns once connected (the first welcome)
            print(f"live at rev {client.mirror.rev} with {len(client.mirror.todos)} todo(s)")

            created = (await http.post("/api/todos", json={"title": "water the plants"},
                                       headers=headers)).json()["todo"]
            await client.wait_for_rev(created["rev"])  # the change came back over the socket
            print(f"mirror at rev {client.mirror.rev}")

            # 3. Close: cancelling the task that runs the client closes its connection.
            nursery.cancel_scope.cancel()
        print("offline")

        # Meanwhile another device ticks it off.
        done = (await http.patch(f"/api/todos/{created['id']}", json={"done": True},
                                 headers=headers)).json()["todo"]

        # 4. Resume: a new client on the same mirror starts from mirror.rev, gets what it
        # missed and nothing it already has.
        client = SyncClient(url, token, mirror=client.mirror, on_event=on_event)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await client.wait_for_rev(done["rev"])
            print(f"resumed: mirror at rev {client.mirror.rev}, {client.mirror.applied} change(s)"
                  f" applied, {client.mirror.ignored} repeated")
            for todo in client.mirror.todos.values():
                print(f"  {show(todo)}")
            nursery.cancel_scope.cancel()

        # Signing out ends the session: a client still running with this token would get
        # close code 4001 and raise SessionEnded.
        await http.post("/api/auth/logout", headers=headers)
        print("signed out")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:4000")
    email = os.environ.get("NURSERY_EMAIL")
    parser.add_argument("--email", default=email, required=not email, help="default: $NURSERY_EMAIL")
    parser.add_argument("--register", action="store_true", help="create the account first")
    args = parser.parse_args()
    secret = os.environ.get("NURSERY_PASSWORD") or getpass.getpass("password: ")
    trio.run(main, args.url, args.email, secret, args.register)
