"""A local deployment (``local_cluster``) held open until SIGINT or SIGTERM (then stopped,
everything it started), for profiling or repeated runs against the same instances. Prints
one JSON line: urls, pids, database URL, secret (what ``fanout.py --urls`` and
``profile.py --pids`` want).

    .venv/bin/python bench/hold_cluster.py > /tmp/cluster.json &  ...  kill %1
"""

from __future__ import annotations

import json
import os
import signal
import sys

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_cluster import local_cluster


async def main() -> None:
    async with local_cluster(int(sys.argv[1]) if len(sys.argv) > 1 else 3) as cluster:
        print(json.dumps({"urls": cluster.urls, "pids": cluster.pids,
                          "database_url": cluster.database_url, "secret": cluster.secret}),
              flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return


if __name__ == "__main__":
    trio.run(main)
