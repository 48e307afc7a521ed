"""``filesvc serve``, ``filesvc token`` and ``filesvc config``.

Settings come from flags, then ``FILESVC_*`` variables, then the ``--config`` TOML file (or the
file ``FILESVC_CONFIG`` names), then defaults; every command reads them the same way.  A bad
setting or a failure to start ends the process at once with one line on stderr: exit status 2
for a setting, 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path

from aiohttp import web

from blobstore.backends import describe
from filesvc import accesslog
from filesvc.app import create_app
from filesvc.appkeys import CONNECTED, INFLIGHT, READY
from filesvc.auth import mint
from filesvc.connections import listen
from filesvc.errors import BadRequest
from filesvc.params import parse_company_id
from filesvc.secret_file import SECRET_FILE
from filesvc.settings import ConfigError, Settings, default_of, resolve, specs
from filesvc.workers import Supervisor

log = logging.getLogger("filesvc")

# A token living longer than a year is a credential nobody remembers handing out.
MAX_TOKEN_TTL = 366 * 86_400
# Caller ids end up in logs and in the database: bounded and printable.
MAX_CALLER_ID = 256
# After the drain deadline, what the connections still get to close before the process ends.
AFTER_DRAIN_SECONDS = 1.0
# A worker of `--workers N` shares its port with workers that may be serving already (it may be
# a replacement): it takes connections once its database is ready rather than answer 503s
# beside them, or after this long anyway, so /readyz can say why it is not.
WORKER_READY_WAIT_S = 30.0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class StartFailure(Exception):
    """The server could not start; the message is one line."""


def _shown(default: object) -> object:
    return "unset" if default is None else default


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of settings, keyed by their variable names (FILESVC_CONFIG)",
    )
    for f, spec in specs():
        if spec.flag:
            parser.add_argument(
                spec.flag_name,
                dest=f.name,
                metavar=spec.env.removeprefix("FILESVC_"),
                help=f"{spec.help} ({spec.env}; default: {_shown(default_of(f))})",
            )
    hidden = [spec for _, spec in specs() if not spec.flag]
    parser.epilog = (
        "Precedence: flag > environment > config file > default.  Settings without a flag "
        "(environment or config file only): "
        + "; ".join(f"{spec.env}: {spec.help}" for spec in hidden)
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="filesvc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('filesvc')}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    _settings_flags(serve)
    config = sub.add_parser(
        "config", help="print the effective settings (secrets redacted) and where each came from"
    )
    _settings_flags(config)
    config.add_argument("--json", action="store_true", help="print one JSON object instead")
    token = sub.add_parser("token", help="print a token signed with the server's secret")
    token.add_argument("--company", required=True, help="company id the token grants")
    who = token.add_mutually_exclusive_group()
    who.add_argument("--user", help="user id (the 'sub' claim); default 'user'")
    who.add_argument("--app", help="application id (an application token)")
    token.add_argument("--ttl", default="3600", help="lifetime in seconds (default 3600)")
    token.add_argument(
        "--create-secret",
        action="store_true",
        help="create the secret in the data directory if there is none (as serve does)",
    )
    token.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    token.add_argument("--data-dir", help="data directory holding the secret (FILESVC_DATA_DIR)")
    return parser


def serve_args(argv: list[str] | None) -> list[str]:
    """The arguments after ``serve`` on this command line."""
    given = sys.argv[1:] if argv is None else argv
    return given[given.index("serve") + 1 :] if "serve" in given else []


def _config_file(args: argparse.Namespace, env: Mapping[str, str]) -> Path | None:
    if args.config is not None:
        return Path(args.config)
    named = env.get("FILESVC_CONFIG")
    return Path(named) if named else None


def _flags(args: argparse.Namespace) -> dict[str, object]:
    return {f.name: getattr(args, f.name, None) for f, _ in specs()}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``filesvc`` console script."""
    args = _parser().parse_args(argv)
    env = os.environ
    try:
        if args.command == "token":
            return _token(args, env)
        if args.command == "config":
            return _config(args, env)
        settings = Settings.load(env, flags=_flags(args), config_file=_config_file(args, env))
    except ConfigError as exc:
        print(f"filesvc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    accesslog.configure()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            if settings.workers > 1 and settings.worker_index is None:
                # Each worker is this same command again (same flags, same environment, file).
                runner.run(Supervisor(settings, serve_args=serve_args(argv)).run())
            else:
                runner.run(serve(settings))
    except StartFailure as exc:
        print(f"filesvc: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop unless turned off: measured faster than asyncio's loop on every read route (bench
    scenario ``reads``, bench/README.md); None is asyncio's own."""
    if not settings.uvloop:
        return None
    import uvloop

    return uvloop.new_event_loop


def _caller_id(raw: str | None, flag: str) -> str | None:
    if raw is not None and (
        not raw or len(raw) > MAX_CALLER_ID or not raw.isprintable() or raw.strip() != raw
    ):
        raise ConfigError(f"{flag} must be 1-{MAX_CALLER_ID} printable characters")
    return raw


def _token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        company = parse_company_id(args.company)
    except BadRequest as exc:
        raise ConfigError(f"--company: {exc.message}") from None
    user = _caller_id(args.user, "--user")
    app = _caller_id(args.app, "--app")
    ttl_text = str(args.ttl).strip()
    if not (ttl_text.isascii() and ttl_text.isdigit()) or not 1 <= int(ttl_text) <= MAX_TOKEN_TTL:
        raise ConfigError(f"--ttl must be a whole number of seconds from 1 to {MAX_TOKEN_TTL}")
    values = resolve(env, {"data_dir": args.data_dir}, _config_file(args, env))
    settings = Settings.load(
        env,
        flags={"data_dir": args.data_dir},
        config_file=_config_file(args, env),
        create_secret=args.create_secret,
    )
    if values["jwt_secret"][0]:
        print(
            f"filesvc token: secret from FILESVC_JWT_SECRET ({values['jwt_secret'][1]})",
            file=sys.stderr,
        )
    else:
        where = settings.data_dir / SECRET_FILE
        print(
            f"filesvc token: secret from {where} (data directory: {values['data_dir'][1]})",
            file=sys.stderr,
        )
    print(mint(settings.jwt_secret, company=company, user=user, app=app, ttl=int(ttl_text)))
    return 0


def _config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    values = resolve(env, _flags(args), _config_file(args, env))
    rows: dict[str, dict[str, object]] = {}
    for f, spec in specs():
        value, source = values[f.name]
        if spec.secret and value:
            value = "<redacted>"
        elif f.name == "jwt_secret":
            kept = values["data_dir"][0] / SECRET_FILE
            state = "exists" if kept.exists() else "created at first start"
            value, source = "<redacted>", f"{kept} ({state})"
        rows[spec.env] = {
            "value": str(value) if isinstance(value, Path) else value,
            "source": source,
        }
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for name, row in rows.items():
        print(f"{name} = {json.dumps(row['value'])}  # {row['source']}")
    return 0


def _one_line(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno:
        where = f": {exc.filename}" if exc.filename else ""
        return os.strerror(exc.errno) + where
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then stop listening, drain in-flight requests, clean up.

    aiohttp's own shutdown stops reading request bodies at once (docs/measured.md), which would
    fail uploads in flight; so the listener stops accepting first and the handlers get time to
    finish.  A failure while starting cleans up what did start (worker processes included) and
    raises StartFailure, so the process ends instead of living on, listening on nothing."""
    app = create_app(settings)
    # Our own drain (below) is the wait for requests in flight; aiohttp's shutdown would wait up
    # to another 60 s by default for handlers still running after the drain deadline.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=AFTER_DRAIN_SECONDS)
    try:
        await runner.setup()
    except Exception as exc:
        await runner.cleanup()
        log.debug("start failed", exc_info=True)
        raise StartFailure(_one_line(exc)) from None
    if settings.worker_index is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app[READY].wait(), WORKER_READY_WAIT_S)
    try:
        listener = await listen(runner, settings)
    except OSError as exc:
        await runner.cleanup()
        raise StartFailure(f"{settings.host}:{settings.port}: {_one_line(exc)}") from None
    # The port actually bound: with FILESVC_PORT=0 the kernel chose it.
    port = listener.sockets[0].getsockname()[1] if listener.sockets else settings.port
    loop = asyncio.get_running_loop()
    log.info(
        "listening on http://%s:%d, data in %s, blobs in %s, event loop %s",
        settings.host,
        port,
        settings.data_dir,
        describe(settings.blob_location()),
        type(loop).__module__.split(".")[0],
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    connected = app[CONNECTED]
    await asyncio.wait({stopping, connected}, return_when=asyncio.FIRST_COMPLETED)
    failed = connected.exception() if connected.done() and not connected.cancelled() else None
    if isinstance(failed, Exception):
        # A shared database reached after start holds another master key's check value.
        stopping.cancel()
        listener.close()
        await runner.cleanup()
        raise StartFailure(_one_line(failed))
    await stop.wait()
    stopping.cancel()
    log.info("stopping: draining requests in flight")
    listener.close()  # stop accepting; connections in flight go on
    try:
        await asyncio.wait_for(app[INFLIGHT].drained(), settings.drain_timeout)
    except TimeoutError:
        log.warning("requests still running after %.0fs; stopping anyway", settings.drain_timeout)
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
