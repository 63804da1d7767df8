"""The command line: ``nursery serve``, ``nursery cluster``, ``nursery watch``.

Exit status: 0 after a clean shutdown, 1 when startup fails (the reason on stderr).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from pathlib import Path

import trio

from nursery import logs
from nursery.cluster import add_cluster_commands, run_cluster_command
from nursery.config import PORT, ConfigError, Settings
from nursery.errors import NurseryError
from nursery.server import Lifecycle, serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nursery",
        description="A realtime backend for a multi-device todo app.",
        epilog="environment variables (flags win):\n" + Settings.describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run one instance")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=_port, help="port to listen on (default 4000)")
    run.add_argument("--data-dir", type=Path, help="embedded database and secret (default ./.nursery)")
    watcher = commands.add_parser("watch", help="log in and print your todos live")
    watcher.add_argument(
        "--url", default="http://127.0.0.1:4000",
        help="an instance or the proxy (default http://127.0.0.1:4000)",
    )
    watcher.add_argument("--email", help="default: $NURSERY_EMAIL")
    watcher.add_argument("--password", help="default: $NURSERY_PASSWORD (a flag shows up in ps)")
    add_cluster_commands(commands)
    return parser


async def _serve_until_signalled(settings: Settings) -> None:
    lifecycle = Lifecycle()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signals() -> None:
                async for signum in signals:
                    logging.getLogger("nursery").info("received %s", signal.Signals(signum).name)
                    lifecycle.request_stop()

            nursery.start_soon(stop_on_signals)
            async with trio.open_nursery() as serving:
                await serving.start(serve, settings, lifecycle)
                _freeze_startup_objects()
            nursery.cancel_scope.cancel()


def _freeze_startup_objects() -> None:
    """Once the instance serves, what it made to start (modules, the GraphQL schema, pools,
    caches) lives as long as the process: frozen out of the cyclic collector's sight, a full
    collection walks only what requests and sockets made since. Unfrozen, full collections
    paused an instance for 54-145 ms under the fan-out load: its p99 tail (bench/README.md)."""
    gc.collect()
    gc.freeze()


def _port(text: str) -> int:
    """A flag's value is reported as the flag (``argument --port: ...``), not as its variable."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not PORT.check(port):
        raise argparse.ArgumentTypeError(f"{text!r} is not {PORT.accepts}")
    return port


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parse_args``, except that an unknown flag is reported with the usage of the command it
    was given to (``nursery serve --bogus`` shows serve's flags, not the list of commands)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = _subcommand(parser, args.command)
        if args.command == "cluster":
            command = _subcommand(command, args.cluster_command)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            chosen: argparse.ArgumentParser = action.choices[name]
            return chosen
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parse(_parser(), argv)
    if args.command == "cluster":
        return run_cluster_command(args)
    if args.command == "watch":
        from nursery.watch import main as watch_main

        logging.basicConfig(level="WARNING")  # INFO logs would mix into the printed list
        return watch_main(args.url, args.email, args.password)
    try:
        settings = Settings.from_env(
            **{k: v for k, v in vars(args).items() if k in {"host", "port", "data_dir"}}
        )
    except ConfigError as exc:
        print(f"nursery: {exc.message}", file=sys.stderr)
        return 1
    logs.configure(settings.log_level, settings.log_format, settings.name)
    if args.command == "serve":
        try:
            trio.run(_serve_until_signalled, settings)
        except BaseException as exc:
            reason = _startup_failure(exc)
            if reason is None:
                raise
            print(f"nursery: cannot start: {reason}", file=sys.stderr)
            return 1
    return 0


def _startup_failure(exc: BaseException) -> str | None:
    """The reason to print for a failure we expect (possibly inside exception groups)."""
    if isinstance(exc, NurseryError):
        return exc.message
    if isinstance(exc, SystemExit) and isinstance(exc.code, str):
        return exc.code.removeprefix("nursery: ")
    if isinstance(exc, OSError):  # e.g. the port is taken
        return f"{exc.strerror or exc}"
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            reason = _startup_failure(inner)
            if reason is not None:
                return reason
    return None
