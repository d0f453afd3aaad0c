"""Check the Dockerfile without a container runtime: run its steps in directories and venvs.

What a ``docker build`` would do is done here with what the machine has:

* the build context is a copy of the checkout filtered by ``.dockerignore`` (the rules docker
  applies: last matching pattern wins, a pattern matching a parent directory matches what is
  below it, ``!`` lets a path back in);
* every stage gets a directory that stands for its file system and a fresh venv for its Python
  (``--system-site-packages``, so runtime dependencies already on the machine are reused; the
  package itself is always the one the stage installs);
* ``COPY`` copies into the stage's directory, ``WORKDIR`` makes one there, ``RUN`` runs its
  commands with container paths mapped into the stage's directory and ``pip``/``python`` taken
  from the stage's venv; ``useradd`` and ``--chown`` are recorded, not run;
* the image's command (``ENTRYPOINT`` + ``CMD``) runs with the final stage's venv, in its
  working directory.

Only the instructions and commands below are known; anything else is an error, so the
Dockerfile and this check cannot drift apart silently.  ``tests/test_image.py`` uses it;
run it by hand with ``python scripts/check_image.py`` (prints what it did, exit code 0 when
every check passed).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent

#: Instructions this check can carry out (others make it fail).
KNOWN = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"}

#: The commands of the example replay the README's main job runs (scripts/demo.sh).
EXAMPLE_REPLAY = [
    "replay", "-w", "examples.roi:RoiWorker", "-r", "examples.roi:RoiReducer",
    "-f", "examples/data/eiger.cbors", "examples/data/positions.cbors",
    "-p", "examples/parameters.json", "--out", "example-result.h5",
]


class ImageCheckError(Exception):
    """A step of the Dockerfile that this check cannot carry out, or that failed."""


# === the Dockerfile ===


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), its argument text and its line number."""

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """A build stage: ``FROM base [AS name]`` and the instructions after it."""

    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of instructions.

    Comment lines (also inside continued lines) and blank lines are dropped; a trailing
    backslash continues an instruction on the next line.

    Raises
    ------
    ImageCheckError
        on an instruction outside ``KNOWN`` or one before the first ``FROM``.
    """
    stages: list[Stage] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, args = " ".join(pending).partition(" ")
        pending = []
        keyword = keyword.upper()
        if keyword not in KNOWN:
            raise ImageCheckError(f"line {start}: {keyword} is not an instruction this check "
                                  f"knows ({', '.join(sorted(KNOWN))})")
        if keyword == "FROM":
            words = args.split()
            if len(words) == 3 and words[1].upper() == "AS":
                stages.append(Stage(words[0], words[2], start))
            elif len(words) == 1:
                stages.append(Stage(words[0], None, start))
            else:
                raise ImageCheckError(f"line {start}: FROM {args!r}: expected 'image [AS name]'")
        elif not stages:
            raise ImageCheckError(f"line {start}: {keyword} before the first FROM")
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip(), start))
    if pending:
        raise ImageCheckError("the Dockerfile ends inside a continued line")
    if not stages:
        raise ImageCheckError("no FROM in the Dockerfile")
    return stages


def exec_form(instruction: Instruction) -> list[str] | None:
    """The JSON list of an exec-form ``ENTRYPOINT``/``CMD``/``RUN``; None for the shell form."""
    if not instruction.args.startswith("["):
        return None
    value = json.loads(instruction.args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageCheckError(f"line {instruction.line}: exec form must be a list of strings")
    return [str(v) for v in value]


# === .dockerignore ===


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's path pattern as a regex: ``*`` and ``?`` stay inside one path element, ``**``
    spans any number of them (Go's filepath.Match plus ``**``, as docker's matcher has it)."""
    parts: list[str] = []
    segments = pattern.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:.*/)?")
            continue
        out = ""
        j = 0
        while j < len(segment):
            c = segment[j]
            if c == "*":
                out += "[^/]*"
            elif c == "?":
                out += "[^/]"
            elif c == "[":
                end = segment.find("]", j + 1)
                if end < 0:
                    raise ImageCheckError(f".dockerignore: unclosed '[' in {pattern!r}")
                body = segment[j + 1:end].replace("\\", "\\\\")
                out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
                j = end
            else:
                out += re.escape(c)
            j += 1
        parts.append(out if last else out + "/")
    return re.compile("".join(parts) + r"\Z")


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    include: bool  # a ``!`` pattern: lets matching paths back in
    regex: re.Pattern[str]


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    """The rules of a ``.dockerignore`` file, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if include else line).lstrip("/")
        rules.append(IgnoreRule(pattern, include, _pattern_regex(pattern)))
    return rules


def is_excluded(path: str, rules: Sequence[IgnoreRule]) -> bool:
    """Whether ``path`` (relative, ``/``-separated) stays out of the build context."""
    pieces = path.split("/")
    candidates = ["/".join(pieces[:n]) for n in range(1, len(pieces) + 1)]
    excluded = False
    for rule in rules:
        if any(rule.regex.match(c) for c in candidates):
            excluded = not rule.include
    return excluded


def _may_hold_included(directory: str, rules: Sequence[IgnoreRule]) -> bool:
    """Whether a ``!`` rule could let back in something below an excluded ``directory``."""
    for rule in rules:
        if not rule.include:
            continue
        literal = rule.pattern.split("*")[0].split("?")[0].split("[")[0]
        if literal.startswith(directory + "/") or (directory + "/").startswith(literal):
            return True
    return False


def build_context(source: Path, dest: Path, rules: Sequence[IgnoreRule]) -> list[str]:
    """Copy the files of ``source`` that the rules keep into ``dest``; returns their paths."""
    kept: list[str] = []
    for top, dirs, files in os.walk(source):
        rel_top = os.path.relpath(top, source)
        prefix = "" if rel_top == "." else rel_top.replace(os.sep, "/") + "/"
        dirs[:] = sorted(d for d in dirs if d != ".git" and (
            not is_excluded(prefix + d, rules) or _may_hold_included(prefix + d, rules)))
        for name in sorted(files):
            rel = prefix + name
            if is_excluded(rel, rules):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(top) / name, target)
            kept.append(rel)
    return kept


# === running the stages ===


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: str


@dataclass
class StageState:
    """What a stage has built: its file system directory, venv, settings and users."""

    name: str
    root: Path
    venv: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    users: dict[str, User] = field(default_factory=lambda: {"root": User("root", 0, "/root")})
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    exposed: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def path(self, container_path: str) -> Path:
        """The directory standing for ``container_path`` (relative: to the WORKDIR)."""
        full = PurePosixPath(self.workdir) / container_path
        resolved = os.path.normpath(str(full)).lstrip("/")
        return self.root / resolved

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def user_record(self, spec: str) -> User:
        """The user a ``USER``/``--chown`` value names (``name``, ``uid``, with ``:group``)."""
        who = spec.split(":")[0]
        for user in self.users.values():
            if who in (user.name, str(user.uid)):
                return user
        raise ImageCheckError(f"user {spec!r} was never created in stage {self.name}")

    def process_env(self) -> dict[str, str]:
        """The environment of a command run in this stage (the machine's, minus what would
        reach outside the venv, plus the Dockerfile's ENV)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
        env.update(self.env)
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env


def _base_python(base: str) -> None:
    """A ``python:X.Y-...`` base must be this interpreter's version: its venv stands for it."""
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:[.-].*)?", base)
    if match is None:
        raise ImageCheckError(f"FROM {base}: only python:X.Y images (or earlier stages) "
                              "can be stood in for")
    wanted = (int(match.group(1)), int(match.group(2)))
    if sys.version_info[:2] != wanted:
        raise ImageCheckError(f"FROM {base} needs Python {wanted[0]}.{wanted[1]}; this check "
                              f"runs under {sys.version_info[0]}.{sys.version_info[1]}")


class Builder:
    """Runs stages in ``work``; ``images`` maps image names (no tag) to built states, for
    a ``FROM dranspose-fast`` continuing a state built earlier (it shares its directories)."""

    def __init__(self, context: Path, work: Path, images: dict[str, StageState] | None = None,
                 timeout: float = 900.0) -> None:
        self.context = context
        self.work = work
        self.images = dict(images or {})
        self.timeout = timeout
        self.stages: dict[str, StageState] = {}

    def build(self, stages: Sequence[Stage]) -> StageState:
        """Run every stage in order; returns the last one's state."""
        state: StageState | None = None
        for index, stage in enumerate(stages):
            state = self.run_stage(stage, stage.name or f"stage{index}")
            self.stages[state.name] = state
        assert state is not None
        return state

    def _start(self, stage: Stage, name: str) -> StageState:
        image = stage.base.split("@")[0]
        image = image.rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image
        earlier = self.stages.get(stage.base) or self.images.get(image)
        if earlier is not None:  # continue it: same directories, copied settings
            return replace(earlier, name=name, env=dict(earlier.env), users=dict(earlier.users),
                           exposed=list(earlier.exposed), log=[])
        _base_python(stage.base)
        root = self.work / name / "fs"
        root.mkdir(parents=True)
        env_dir = self.work / name / "venv"
        venv.create(env_dir, system_site_packages=True, with_pip=True, symlinks=True)
        return StageState(name=name, root=root, venv=env_dir)

    def run_stage(self, stage: Stage, name: str) -> StageState:
        state = self._start(stage, name)
        for ins in stage.instructions:
            if "$" in ins.args and ins.keyword != "LABEL":
                raise ImageCheckError(f"line {ins.line}: variables ($) are not supported here")
            handler = getattr(self, f"_do_{ins.keyword.lower()}")
            handler(state, ins)
            state.log.append(f"{ins.keyword} {ins.args}")
        return state

    def _do_workdir(self, state: StageState, ins: Instruction) -> None:
        state.workdir = str(PurePosixPath(state.workdir) / ins.args)
        state.path(".").mkdir(parents=True, exist_ok=True)

    def _do_env(self, state: StageState, ins: Instruction) -> None:
        words = shlex.split(ins.args)
        if words and "=" not in words[0]:  # the old `ENV key value` form
            state.env[words[0]] = " ".join(words[1:])
            return
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise ImageCheckError(f"line {ins.line}: ENV {word!r} is not key=value")
            state.env[key] = value

    def _do_user(self, state: StageState, ins: Instruction) -> None:
        state.user_record(ins.args)  # must exist
        state.user = ins.args

    def _do_expose(self, state: StageState, ins: Instruction) -> None:
        state.exposed += [int(p.split("/")[0]) for p in ins.args.split()]

    def _do_label(self, state: StageState, ins: Instruction) -> None:
        pass

    def _do_entrypoint(self, state: StageState, ins: Instruction) -> None:
        state.entrypoint = exec_form(ins)
        if state.entrypoint is None:
            raise ImageCheckError(f"line {ins.line}: ENTRYPOINT must use the exec form "
                                  "[\"...\"], so signals reach dranspose-fast, not a shell")

    def _do_cmd(self, state: StageState, ins: Instruction) -> None:
        state.cmd = exec_form(ins)
        if state.cmd is None:
            raise ImageCheckError(f"line {ins.line}: CMD must use the exec form")

    def _do_copy(self, state: StageState, ins: Instruction) -> None:
        words = shlex.split(ins.args)
        source_root = self.context
        while words and words[0].startswith("--"):
            flag, _, value = words.pop(0).partition("=")
            if flag == "--from":
                if value not in self.stages:
                    raise ImageCheckError(f"line {ins.line}: no earlier stage {value!r}")
                source_root = self.stages[value].root
            elif flag == "--chown":
                state.user_record(value)  # recorded ownership: the user must exist
            else:
                raise ImageCheckError(f"line {ins.line}: COPY {flag} is not supported")
        if len(words) < 2:
            raise ImageCheckError(f"line {ins.line}: COPY needs a source and a destination")
        *sources, dest = words
        matched: list[Path] = []
        for src in sources:
            found = sorted(glob.glob(str(source_root / src.lstrip("/"))))
            if not found:
                raise ImageCheckError(f"line {ins.line}: COPY source {src!r} is not in the "
                                      "build context (or the stage)")
            matched += [Path(p) for p in found]
        target = state.path(dest)
        into_dir = dest.endswith("/") or len(matched) > 1 or target.is_dir()
        for src_path in matched:
            if src_path.is_dir():
                shutil.copytree(src_path, target, dirs_exist_ok=True, symlinks=True)
            else:
                where = target / src_path.name if into_dir else target
                where.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src_path, where)

    # --- RUN ---

    def _do_run(self, state: StageState, ins: Instruction) -> None:
        if exec_form(ins) is not None:
            raise ImageCheckError(f"line {ins.line}: use the shell form of RUN")
        lexer = shlex.shlex(ins.args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, "&&"]:
            if token == "&&":
                if not command:
                    raise ImageCheckError(f"line {ins.line}: empty command")
                self._run_command(state, ins, command)
                command = []
            elif token and all(c in "();<>|&" for c in token):
                raise ImageCheckError(f"line {ins.line}: {token!r}: only `a && b` is supported")
            else:
                command.append(token)

    def _map_args(self, state: StageState, args: Iterable[str]) -> list[str]:
        out: list[str] = []
        for arg in args:
            if arg.startswith("/"):
                mapped = str(state.path(arg))
            elif arg.startswith("--") and "=/" in arg:
                key, _, value = arg.partition("=")
                mapped = f"{key}={state.path(value)}"
            else:
                mapped = arg
            if any(c in mapped for c in "*?[") and not arg.startswith("-"):
                found = sorted(glob.glob(mapped if os.path.isabs(mapped)
                                         else str(state.path(".") / mapped)))
                if not found:
                    raise ImageCheckError(f"{arg!r} matches nothing")
                out += found
            else:
                out.append(mapped)
        return out

    def _run_command(self, state: StageState, ins: Instruction, argv: list[str]) -> None:
        program, args = argv[0], argv[1:]
        if program in ("pip", "pip3"):
            real = [str(state.python), "-m", "pip", *self._map_args(state, args)]
        elif program in ("python", "python3"):
            real = [str(state.python), *self._map_args(state, args)]
        elif program == "useradd":
            self._useradd(state, ins, args)
            return
        elif program == "rm":
            for target in self._map_args(state, [a for a in args if not a.startswith("-")]):
                self._inside(state, Path(target))
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                elif os.path.lexists(target):
                    os.unlink(target)
            return
        elif program == "mkdir":
            for target in self._map_args(state, [a for a in args if not a.startswith("-")]):
                Path(target).mkdir(parents=True, exist_ok=True)
            return
        else:
            raise ImageCheckError(f"line {ins.line}: {program!r} cannot be run without a "
                                  "container (known: pip, python, useradd, rm, mkdir)")
        done = subprocess.run(real, cwd=state.path("."), env=state.process_env(),
                              capture_output=True, text=True, timeout=self.timeout, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
            raise ImageCheckError(f"line {ins.line}: `{' '.join(argv)}` failed "
                                  f"({done.returncode}):\n{tail}")

    @staticmethod
    def _inside(state: StageState, target: Path) -> None:
        if not target.resolve().is_relative_to(state.root.resolve()):
            raise ImageCheckError(f"{target} is outside the stage's directory")

    def _useradd(self, state: StageState, ins: Instruction, args: list[str]) -> None:
        uid: int | None = None
        home: str | None = None
        create_home = False
        rest = list(args)
        name = rest.pop() if rest else ""
        while rest:
            opt = rest.pop(0)
            if opt in ("--uid", "-u"):
                uid = int(rest.pop(0))
            elif opt in ("--home-dir", "-d"):
                home = rest.pop(0)
            elif opt in ("--create-home", "-m"):
                create_home = True
            elif opt in ("--user-group", "-U", "--system", "-r", "--no-log-init", "-l"):
                pass
            elif opt in ("--shell", "-s", "--gid", "-g"):
                rest.pop(0)
            else:
                raise ImageCheckError(f"line {ins.line}: useradd {opt} is not supported")
        if not name or name.startswith("-") or uid is None:
            raise ImageCheckError(f"line {ins.line}: useradd needs --uid N and a user name")
        if uid == 0 or name in state.users:
            raise ImageCheckError(f"line {ins.line}: user {name!r} / uid {uid} exists already")
        home = home or f"/home/{name}"
        if create_home:
            state.path(home).mkdir(parents=True, exist_ok=True)
        state.users[name] = User(name, uid, home)


# === the built image ===


def runs_as_root(state: StageState) -> bool:
    """Whether the image's processes run as root (uid 0)."""
    return state.user_record(state.user).uid == 0


def image_command(state: StageState, args: Sequence[str] | None = None) -> list[str]:
    """``ENTRYPOINT`` + (``args`` or ``CMD``), its program taken from the stage's venv only."""
    if not state.entrypoint:
        raise ImageCheckError("the image has no ENTRYPOINT")
    argv = [*state.entrypoint, *(state.cmd or [] if args is None else args)]
    program = state.venv / "bin" / argv[0]
    if not program.exists():
        raise ImageCheckError(f"{argv[0]} is not installed in the image ({program} is missing)")
    return [str(program), *argv[1:]]


def run_image(state: StageState, args: Sequence[str] | None = None,
              timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run the image's command (as ``docker run IMAGE args`` would) in its working directory."""
    return subprocess.run(image_command(state, args), cwd=state.path("."),
                          env=state.process_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def build_image(dockerfile: Path, source: Path, work: Path) -> tuple[Builder, StageState]:
    """The build context of ``source`` (its ``.dockerignore`` applied) and every stage of
    ``dockerfile``, in ``work``; returns the builder (its stages) and the final stage."""
    ignore = source / ".dockerignore"
    rules = parse_dockerignore(ignore.read_text() if ignore.exists() else "")
    context = work / "context"
    build_context(source, context, rules)
    builder = Builder(context, work)
    final = builder.build(parse_dockerfile(dockerfile.read_text()))
    return builder, final


def main(argv: Sequence[str] | None = None) -> int:
    """Build the Dockerfile's stages, check the user, run ``--help`` and the example replay."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile")
    parser.add_argument("--context", type=Path, default=ROOT)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="check-image-"))
    try:
        _, final = build_image(args.dockerfile, args.context, work)
        for line in final.log:
            print(f"done: {line}")
        if runs_as_root(final):
            print("FAIL: the image runs as root")
            return 1
        for command in (None, EXAMPLE_REPLAY):
            done = run_image(final, command)
            shown = " ".join(image_command(final, command)[1:])
            print(f"{'ok' if done.returncode == 0 else 'FAIL'}: dranspose-fast {shown}")
            if done.returncode != 0:
                print(done.stdout + done.stderr)
                return 1
        return 0
    except ImageCheckError as exc:
        print(f"FAIL: {exc}")
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
