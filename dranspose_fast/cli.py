"""``dranspose-fast``: the command line (dranspose 0.2's subcommands and flags)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from dranspose_fast import __version__
from dranspose_fast.errors import DransposeFastError
from dranspose_fast.runtime.settings import CliSettings

if TYPE_CHECKING:
    from dranspose_fast.ingester import Ingester

logger = logging.getLogger("dranspose_fast")

#: Errors of user input: reported in one line with exit code 2, never as a traceback.
#: (``OSError`` covers missing files and ports already in use.)
USER_ERRORS = (DransposeFastError, OSError)


def _replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay recorded dumps through worker and reducer classes (no Redis needed)",
        description="Replay recorded streams through a worker and a reducer class, offline.",
    )
    p.add_argument("-w", "--workerclass", required=True, help="worker class, module:Class")
    p.add_argument("-r", "--reducerclass", required=True, help="reducer class, module:Class")
    p.add_argument(
        "-f",
        "--files",
        nargs="+",
        default=None,
        metavar="FILE",
        help="dump files (.cbors, .cbors.gz, .pkls), merged by event number",
    )
    p.add_argument(
        "-s", "--source", default=None, help="source class (module:Class) instead of files"
    )
    p.add_argument(
        "-p",
        "--parameters",
        default=None,
        metavar="FILE",
        help="parameter file: a JSON or CBOR list of {name, data}, or a pickle named "
             ".pkl/.pickle (read as data only: no code runs)",
    )
    p.add_argument(
        "--map",
        default=None,
        metavar="FILE",
        help="trigger map / sequence JSON: bind events to workers as the live system does",
    )
    p.add_argument("--nworkers", type=int, default=2, help="worker instances (default 2)")
    p.add_argument("--processes", action="store_true", help="run the workers in separate processes")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="serve publish (HDF5-REST) and parameter POSTs on 127.0.0.1:PORT",
    )
    p.add_argument("--host", default="127.0.0.1", help="address of the HTTP server")
    p.add_argument(
        "--keep-alive", action="store_true", help="keep serving after the end until Ctrl-C"
    )
    p.add_argument(
        "--rate", type=float, default=None, metavar="HZ", help="play at this many events per second"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE.h5",
        help="write the reducer's publish to this HDF5 file",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the random spread of events (without --map)"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )


def _service_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("controller", help="the controller: trigger map, binding, REST API")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="HTTP port (default 5000)")

    p = sub.add_parser("reducer", help="the reducer: runs the reducer class, serves publish")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=5000, help="HTTP port (default 5000)")
    p.add_argument("-c", "--reducerclass", default=None, help="module:Class (REDUCER_CLASS)")

    p = sub.add_parser("worker", help="a worker: runs the worker class on its events")
    p.add_argument("-n", "--name", default=None, help="worker name (WORKER_NAME)")
    p.add_argument("-c", "--workerclass", default=None, help="module:Class (WORKER_CLASS)")
    _metrics_flags(p)

    p = sub.add_parser("debugworker", help="a worker that keeps the last events for inspection")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="HTTP port (default 5000)")
    p.add_argument("-n", "--name", default=None, help="worker name (WORKER_NAME)")

    p = sub.add_parser("ingester", help="an ingester: forwards one upstream stream to workers")
    p.add_argument("-c", "--ingesterclass", required=True,
                   help="a built-in name (ZmqPullSingleIngester, ZmqSubXspressIngester, "
                        "TcpPcapIngester, ...) or module:Class")
    p.add_argument("-u", "--upstream_url", default=None, help="upstream ZMQ URL (UPSTREAM_URL)")
    p.add_argument("-n", "--name", required=True, help="the stream name")
    p.add_argument("--url", default=None, help="ROUTER URL workers connect to (INGESTER_URL)")
    _metrics_flags(p)

    p = sub.add_parser("http_ingester", help="an HTTP ingester app (e.g. Sardana) under uvicorn")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("-c", "--ingesterapp", required=True,
                   help="the ASGI app, module:app (dranspose_fast.ingesters.http_sardana:app)")
    p.add_argument("-p", "--port", type=int, default=5000, help="HTTP port (default 5000)")
    p.add_argument("-n", "--name", required=True,
                   help="the stream name (exported as INGESTER_STREAMS)")

    p = sub.add_parser("combined", help="controller, reducer, two workers and a STINS ingester "
                                        "in one process")
    p.add_argument("--host", default="127.0.0.1", help="address of the HTTP servers")
    p.add_argument("--port", type=int, default=5000, help="controller HTTP port (default 5000)")
    p.add_argument("--reducer-port", type=int, default=5001,
                   help="reducer HTTP port (default 5001)")
    p.add_argument("-u", "--upstream_url", default="tcp://localhost:9999",
                   help="STINS upstream of stream eiger (default tcp://localhost:9999)")
    p.add_argument("--ingester-url", default=None,
                   help="ROUTER URL workers connect to (default INGESTER_URL)")
    p.add_argument("--reducer-url", default=None,
                   help="ZMQ URL workers send results to (default REDUCER_URL)")

    p = sub.add_parser("keys", help="write CURVE keys for the data sockets into DIR "
                                    "(DFAST_CURVE_DIR; docs/security.md)")
    p.add_argument("dir", metavar="DIR", help="the folder to write (created, mode 0700)")
    p.add_argument("--force", action="store_true", help="replace keys that are there")

    p = sub.add_parser("local", help="a whole ensemble on this machine, as child processes")
    p.add_argument("--stream", action="append", default=[], metavar="NAME=URL",
                   help="a STINS stream and its upstream URL (repeat for several)")
    p.add_argument("-w", "--workerclass", default=None, help="worker class, module:Class")
    p.add_argument("-r", "--reducerclass", default=None, help="reducer class, module:Class")
    p.add_argument("--nworkers", type=int, default=2, help="workers to start (default 2)")
    p.add_argument("--host", default="127.0.0.1", help="address of the HTTP servers")
    p.add_argument("--port", type=int, default=5000, help="controller HTTP port (default 5000)")
    p.add_argument("--reducer-port", type=int, default=5001,
                   help="reducer HTTP port (default 5001)")
    p.add_argument("--ingesterclass", action="append", default=[], metavar="[NAME=]CLASS",
                   help="ingester class of every stream (default ZmqPullSingleIngester), or of "
                        "stream NAME only; repeat for several")


def _metrics_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this port (DFAST_METRICS_PORT; "
                        "default: none)")
    p.add_argument("--metrics-host", default=None,
                   help="address of the metrics server (DFAST_METRICS_HOST; default 127.0.0.1)")


def _metrics_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings ``--metrics-port`` and ``--metrics-host`` give (what is not set: none)."""
    out: dict[str, object] = {}
    if getattr(args, "metrics_port", None) is not None:
        out["dfast_metrics_port"] = args.metrics_port
    if getattr(args, "metrics_host", None) is not None:
        out["dfast_metrics_host"] = args.metrics_host
    return out


def _redis_logging(name: str) -> None:
    """Send this process's log records to Redis for the controller's /api/v1/logs."""
    from dranspose_fast.runtime.service import RedisLogHandler, connect
    from dranspose_fast.runtime.settings import DistributedSettings

    handler = RedisLogHandler(connect(DistributedSettings()), name)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(handler)


def _require_redis() -> None:
    """Fail in one line, before anything starts, when Redis cannot be reached."""
    import redis

    from dranspose_fast.runtime.settings import DistributedSettings, redact_url

    url = str(DistributedSettings().redis_dsn)
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    shown = redact_url(url)  # the password is never printed
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        if client.connection_pool.connection_kwargs.get("password") is None:
            raise DransposeFastError(
                f"Redis at {shown} requires a password and REDIS_URL has none "
                "(redis://:PASSWORD@host:port/db)") from None
        raise DransposeFastError(f"Redis at {shown} refused the password of REDIS_URL: "
                                 f"{_first_line(exc)}") from None
    except redis.RedisError as exc:  # no server, TLS that fails, ...: one line
        raise DransposeFastError(f"cannot reach Redis at {shown} (REDIS_URL): "
                                 f"{_first_line(exc)}") from None
    finally:
        client.close()


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _ignore_sigterm_after_uvicorn() -> None:
    # uvicorn re-raises the signal that stopped it after its clean shutdown; a handler of
    # ours turns that into a normal exit (code 0) instead of death by SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)


def _run_http_ingester(args: argparse.Namespace) -> int:
    """0.2's ``http_ingester``: uvicorn serving ``-c module:app`` for stream ``-n``."""
    import uvicorn
    from uvicorn.importer import ImportFromStringError, import_from_string

    from dranspose_fast.errors import ClassLoadError

    os.environ["INGESTER_STREAMS"] = json.dumps([args.name])
    try:
        app = import_from_string(args.ingesterapp)
    except ImportFromStringError as exc:
        raise ClassLoadError(f"cannot load the ingester app: {exc}") from None
    except Exception as exc:  # any error while importing user code
        raise ClassLoadError(f"cannot import {args.ingesterapp!r}: "
                             f"{type(exc).__name__}: {exc}") from None
    _require_redis()
    from dranspose_fast.runtime.settings import IngesterSettings

    # refused here in one line, not in the app's startup under uvicorn (a traceback)
    IngesterSettings().bind_address()
    _redis_logging(f"{args.name}-ingester")
    _ignore_sigterm_after_uvicorn()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _run_combined(args: argparse.Namespace) -> int:
    """0.2's ``combined``: every component but Redis in this process, until SIGTERM/SIGINT."""
    from dranspose_fast import controller
    from dranspose_fast.api.server import HttpThread
    from dranspose_fast.ingesters.zmqpull_single import (
        ZmqPullSingleIngester,
        ZmqPullSingleSettings,
    )
    from dranspose_fast.protocol import StreamName, WorkerName
    from dranspose_fast.reducer import Reducer, create_app
    from dranspose_fast.runtime.settings import ReducerSettings, WorkerSettings
    from dranspose_fast.worker import Worker

    _require_redis()
    ingester_cfg: dict[str, object] = {"ingester_streams": [StreamName("eiger")],
                                       "upstream_url": args.upstream_url}
    if args.ingester_url:
        ingester_cfg["ingester_url"] = args.ingester_url
    reducer_cfg = {"reducer_url": args.reducer_url} if args.reducer_url else {}
    ingester = ZmqPullSingleIngester(ZmqPullSingleSettings(**ingester_cfg))  # type: ignore[arg-type]
    workers = [Worker(WorkerSettings(worker_name=WorkerName(f"worker{i}"))) for i in (1, 2)]
    reducer = Reducer(ReducerSettings(**reducer_cfg))
    _redis_logging("combined")
    started: list[Any] = []
    http: HttpThread | None = None
    try:
        reducer.start()
        started.append(reducer)
        http = HttpThread(create_app(reducer), args.host, args.reducer_port).start()
        ingester.start()
        started.append(ingester)
        for worker in workers:
            worker.start()
            started.append(worker)
        _ignore_sigterm_after_uvicorn()
        controller.run(host=args.host, port=args.port)
    finally:
        if http is not None:
            http.stop()
        for service in reversed(started):
            service.close()
    return 0


def build_ingester(args: argparse.Namespace) -> Ingester:
    """The ingester ``dranspose-fast ingester`` runs: the class ``-c`` with its settings
    (the environment, then ``-n`` as the one stream, ``-u`` and ``--url``)."""
    from dranspose_fast.ingesters import create_ingester

    settings: dict[str, object] = {"ingester_streams": [args.name], **_metrics_settings(args)}
    if args.upstream_url:
        settings["upstream_url"] = args.upstream_url
    if args.url:
        settings["ingester_url"] = args.url
    return create_ingester(args.ingesterclass, **settings)


#: Commands that open data sockets: without CURVE keys they start only when told to
#: (DFAST_CURVE=off), a deliberate change from dranspose 0.2 (docs/compatibility.md).
_DATA_COMMANDS = ("worker", "ingester", "reducer", "debugworker", "http_ingester")


def _check_curve(command: str) -> None:
    """Refuse a data command without keys and without DFAST_CURVE; ``combined`` makes keys."""
    from dranspose_fast.runtime import curve

    if not curve.undecided(curve.CurveSettings()):
        return
    if command in _DATA_COMMANDS:
        raise curve.CurveError(curve.missing_keys_message())
    if command == "combined":  # one process on loopback: its own keys, as `local` makes
        os.environ.update(curve.ephemeral_environment())


def _run_service(args: argparse.Namespace) -> int:
    command = args.command
    if command == "keys":
        from dranspose_fast.runtime.curve import write_keys

        folder = write_keys(Path(args.dir), force=args.force)
        print(f"wrote CURVE keys into {folder}: give servers (ingesters, reducer) and clients "
              "(workers) DFAST_CURVE_DIR={folder}; docs/security.md says which file each needs")
        return 0
    _check_curve(command)
    if command == "http_ingester":
        return _run_http_ingester(args)
    if command == "combined":
        return _run_combined(args)
    if command in ("controller", "reducer", "debugworker"):
        _require_redis()
    if command == "controller":
        from dranspose_fast import controller

        settings = controller.ControllerSettings()  # bad settings: one line, before serving
        _redis_logging("controller")
        _ignore_sigterm_after_uvicorn()
        controller.run(host=args.host, port=args.port, settings=settings)
    elif command == "reducer":
        from dranspose_fast import reducer
        from dranspose_fast.runtime.settings import ReducerSettings

        if args.reducerclass:
            os.environ["REDUCER_CLASS"] = args.reducerclass
        _redis_logging("reducer")
        reducer.run(host=args.host, port=args.port, settings=ReducerSettings())
    elif command == "worker":
        from dranspose_fast.runtime.settings import WorkerSettings
        from dranspose_fast.worker import Worker

        overrides = {"worker_name": args.name} if args.name else {}
        if args.workerclass:
            overrides["worker_class"] = args.workerclass
        overrides.update(_metrics_settings(args))
        worker = Worker(WorkerSettings(**overrides))
        _require_redis()
        _redis_logging(worker.name)
        worker.run()
    elif command == "debugworker":
        from dranspose_fast import debug_worker

        if args.name:
            os.environ["WORKER_NAME"] = args.name
        _redis_logging(args.name or "debugworker")
        debug_worker.run(host=args.host, port=args.port,
                         settings=debug_worker.DebugWorkerSettings())
    elif command == "ingester":
        ingester = build_ingester(args)
        _require_redis()
        _redis_logging(ingester.state.name)
        ingester.run()
    elif command == "local":
        from dranspose_fast.local import parse_classes, parse_streams, run_local

        if args.nworkers < 1:
            raise ValueError(f"--nworkers must be at least 1, got {args.nworkers}")
        streams = parse_streams(args.stream)
        return run_local(streams, args.workerclass, args.reducerclass, args.nworkers, args.port,
                         args.reducer_port, args.host, parse_classes(args.ingesterclass, streams))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dranspose-fast",
        description="Distributed event formation and map-reduce for detector streams.",
    )
    parser.add_argument("--version", action="version", version=f"dranspose-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _replay_parser(sub)
    _service_parsers(sub)
    return parser


def _run_replay(args: argparse.Namespace) -> int:
    from dranspose_fast.replay import replay

    if args.files is None and args.source is None:
        raise FileNotFoundError("replay needs dump files (-f) or a source class (-s)")
    if args.nworkers < 1:
        raise ValueError(f"--nworkers must be at least 1, got {args.nworkers}")
    stop = threading.Event()
    if not args.keep_alive:
        stop.set()
    else:
        print("serving until Ctrl-C", file=sys.stderr)

    def announce(url: str) -> None:
        print(f"serving publish on {url}", file=sys.stderr)

    report = replay(
        args.workerclass,
        args.reducerclass,
        args.files,
        args.source,
        args.parameters,
        args.port,
        stop if args.port is not None else None,
        args.nworkers,
        map_file=args.map,
        rate=args.rate,
        out=args.out,
        processes=args.processes,
        progress=args.progress,
        seed=args.seed,
        host=args.host,
        on_server=announce,
    )
    print(report.summary())
    if args.out is not None:
        print(f"wrote {args.out}")
    return 1 if report.input_errors else 0


def _one_line(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        return f"{where}: {first['msg']} ({exc.error_count()} problem(s) in the settings)"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv``) and run the command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        code = _setup_logging()
        if code == 0:
            parser.print_help()
        return code
    return execute(args)


def _setup_logging() -> int:
    try:
        level = CliSettings().log_level
    except pydantic.ValidationError as exc:
        print(f"dranspose-fast: error: LOG_LEVEL: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return 0


def execute(args: argparse.Namespace) -> int:
    """Run the parsed command ``args.command``; bad input is one line on stderr, exit code 2."""
    code = _setup_logging()
    if code:
        return code
    try:
        if args.command == "replay":
            return _run_replay(args)
        return _run_service(args)
    except USER_ERRORS as exc:
        print(f"dranspose-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, pydantic.ValidationError) as exc:
        logger.debug("user error", exc_info=True)
        print(f"dranspose-fast {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# === dranspose 0.2's module API: one function per command, taking the parsed arguments ===


def create_parser() -> argparse.ArgumentParser:
    """0.2's name of ``build_parser``."""
    return build_parser()


def _command(name: str, args: argparse.Namespace) -> None:
    """Run command ``name`` with ``args`` (missing flags take their defaults); exit on error."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    full = argparse.Namespace(command=name)
    for action in sub.choices[name]._actions:
        if action.dest != "help":
            setattr(full, action.dest, action.default)
    vars(full).update({k: v for k, v in vars(args).items() if v is not None})
    code = execute(full)
    if code:
        sys.exit(code)


def controller(args: argparse.Namespace) -> None:
    """``dranspose-fast controller``."""
    _command("controller", args)


def worker(args: argparse.Namespace) -> None:
    """``dranspose-fast worker``."""
    _command("worker", args)


def ingester(args: argparse.Namespace) -> None:
    """``dranspose-fast ingester``."""
    _command("ingester", args)


def reducer(args: argparse.Namespace) -> None:
    """``dranspose-fast reducer``."""
    _command("reducer", args)


def http_ingester(args: argparse.Namespace) -> None:
    """``dranspose-fast http_ingester``."""
    _command("http_ingester", args)


def debugworker(args: argparse.Namespace) -> None:
    """``dranspose-fast debugworker``."""
    _command("debugworker", args)


def combined(args: argparse.Namespace) -> None:
    """``dranspose-fast combined``."""
    _command("combined", args)


def replay(args: argparse.Namespace) -> None:
    """``dranspose-fast replay``."""
    _command("replay", args)


def run() -> None:
    """The console entry point of 0.2: ``main()`` and exit with its code."""
    sys.exit(main())


if __name__ == "__main__":
    run()
