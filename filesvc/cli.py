"""``filesvc serve`` and ``filesvc token``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from blobstore.backends import describe
from filesvc.app import create_app
from filesvc.appkeys import INFLIGHT
from filesvc.auth import mint
from filesvc.connections import listen
from filesvc.settings import ConfigError, Settings
from filesvc.workers import Supervisor

log = logging.getLogger("filesvc")

# On SIGTERM, uploads in flight get this long to finish before the process stops anyway.
DRAIN_SECONDS = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="filesvc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="address to bind (FILESVC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (FILESVC_PORT, default 8080)")
    serve.add_argument("--data-dir", type=Path, help="data directory (FILESVC_DATA_DIR, ./data)")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes on the port (FILESVC_WORKERS, default 1); more than one runs a "
        "supervisor that replaces a worker that dies",
    )
    token = sub.add_parser("token", help="print a token signed with the server's secret")
    token.add_argument("--company", required=True, help="company id the token grants")
    who = token.add_mutually_exclusive_group()
    who.add_argument("--user", help="user id (the 'sub' claim)")
    who.add_argument("--app", help="application id (an application token)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--data-dir", type=Path, help="data directory holding the secret")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``filesvc`` console script."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"filesvc: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "token":
        settings = Settings.from_env(data_dir=args.data_dir)
        print(
            mint(
                settings.jwt_secret,
                company=args.company,
                user=args.user,
                app=args.app,
                ttl=args.ttl,
            )
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env(
        host=args.host, port=args.port, data_dir=args.data_dir, workers=args.workers
    )
    if settings.workers > 1 and settings.worker_index is None:
        asyncio.run(Supervisor(settings).run())
    else:
        asyncio.run(serve(settings))
    return 0


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then stop listening, drain in-flight requests, clean up.

    aiohttp's own shutdown stops reading request bodies at once (MEASURED.md), which would fail
    uploads in flight; so the listener stops accepting first and the handlers get time to finish."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    listener = await listen(runner, settings)
    log.info(
        "listening on http://%s:%d, data in %s, blobs in %s",
        settings.host,
        settings.port,
        settings.data_dir,
        describe(settings.blob_location()),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining requests in flight")
    listener.close()  # stop accepting; connections in flight go on
    try:
        await asyncio.wait_for(app[INFLIGHT].drained(), DRAIN_SECONDS)
    except TimeoutError:
        log.warning("requests still running after %.0fs; stopping anyway", DRAIN_SECONDS)
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
