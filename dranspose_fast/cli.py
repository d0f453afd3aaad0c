"""``dranspose-fast``: the command line (dranspose 0.2's subcommands and flags, reference §3)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

from dranspose_fast import __version__
from dranspose_fast.errors import DransposeFastError

logger = logging.getLogger("dranspose_fast")

#: Errors of user input: reported in one line with exit code 2, never as a traceback.
USER_ERRORS = (DransposeFastError, FileNotFoundError, IsADirectoryError, PermissionError)


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
        help="parameter file: JSON, pickle or CBOR list of {name, data}",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dranspose-fast",
        description="Distributed event formation and map-reduce for detector streams.",
    )
    parser.add_argument("--version", action="version", version=f"dranspose-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _replay_parser(sub)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "replay":
            return _run_replay(args)
    except USER_ERRORS as exc:
        print(f"dranspose-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"dranspose-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
