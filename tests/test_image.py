"""The Dockerfile, proved without a container runtime (issue 12, items 1 and 6).

``scripts/check_image.py`` runs the Dockerfile's own steps: the build context filtered by
``.dockerignore``, the builder stage's ``pip wheel`` from that clean copy, the runtime stage's
install of the wheel into a fresh venv, its user and its entrypoint.  The tests then run the
image's command from that venv: ``--help`` (the image's default), the README's example replay,
and the ``FROM dranspose-fast`` pattern of ``docs/deployment.md`` with a payload package.
The build takes about a minute (the compiled extensions); it runs once for the module.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_check_image() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_image", ROOT / "scripts/check_image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_image"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


ci = _load_check_image()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """(builder, final stage) of the repository's Dockerfile, built once for the module."""
    work = tmp_path_factory.mktemp("image")
    builder, final = ci.build_image(ROOT / "Dockerfile", ROOT, work)
    return builder, final


# === the Dockerfile as text ===


def test_two_stages_a_builder_and_a_slim_python_311_runtime() -> None:
    stages = ci.parse_dockerfile((ROOT / "Dockerfile").read_text())
    assert [s.name for s in stages] == ["builder", None]
    builder, runtime = stages
    runs = [i.args for i in builder.instructions if i.keyword == "RUN"]
    assert any(r.startswith("pip wheel") and "--no-deps" in r for r in runs), runs
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", runtime.base), runtime.base
    # the runtime takes only the wheel from the builder
    copies = [i.args for i in runtime.instructions if i.keyword == "COPY"]
    assert [c for c in copies if c.startswith("--from")] == ["--from=builder /wheels/ /tmp/wheels/"]


def test_the_final_stage_does_not_run_as_root() -> None:
    final = ci.parse_dockerfile((ROOT / "Dockerfile").read_text())[-1]
    users = [i.args for i in final.instructions if i.keyword == "USER"]
    assert users, "the final stage has no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    entry = [i for i in final.instructions if i.keyword == "ENTRYPOINT"][-1]
    assert ci.exec_form(entry) == ["dranspose-fast"]


def test_parser_refuses_what_it_cannot_carry_out() -> None:
    with pytest.raises(ci.ImageCheckError, match="ADD is not an instruction"):
        ci.parse_dockerfile("FROM python:3.11-slim\nADD x /x\n")
    with pytest.raises(ci.ImageCheckError, match="before the first FROM"):
        ci.parse_dockerfile("RUN true\n")
    stages = ci.parse_dockerfile("FROM a AS b\n# note\nRUN pip install \\\n  # c\n  x\n")
    assert stages[0].instructions[0].args == "pip install x"


# === .dockerignore, with docker's rules ===


@pytest.mark.parametrize(("rules", "path", "excluded"), [
    ("*\n!src", "src/a/b.py", False),          # a `!` rule on a parent lets the tree back in
    ("*\n!src", "other/b.py", True),
    ("*\n!src\n**/*.c", "src/x/y.c", True),   # later rules win
    ("**/__pycache__", "a/b/__pycache__/m.pyc", True),
    ("**/__pycache__", "__pycache__/m.pyc", True),
    ("*.h5", "sub/x.h5", False),              # `*` does not cross `/`
    ("examples/*.h5", "examples/x.h5", True),
    ("build", "build/lib/x.so", True),
    ("/build", "build/lib/x.so", True),       # a leading slash means the context's root
    ("d?t[a-c]", "data", True),
    ("d?t[a-c]", "datz", False),
])
def test_dockerignore_rules(rules: str, path: str, excluded: bool) -> None:
    assert ci.is_excluded(path, ci.parse_dockerignore(rules)) is excluded


def test_context_is_the_tracked_sources_and_nothing_built(tmp_path: Path) -> None:
    rules = ci.parse_dockerignore((ROOT / ".dockerignore").read_text())
    kept = set(ci.build_context(ROOT, tmp_path, rules))
    assert kept == {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    tracked = subprocess.run(
        ["git", "ls-files", "pyproject.toml", "setup.py", "README.md", "_ext", "dranspose_fast",
         "examples"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert set(tracked) <= kept, sorted(set(tracked) - kept)[:10]
    assert not [p for p in kept if p.endswith((".so", ".c", ".pyc"))]
    assert not any(p.startswith(("tests/", "bench/", "build/", ".git/")) for p in kept)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *sorted(kept)], cwd=ROOT,
                             capture_output=True, text=True, check=False).stdout.split()
    assert not ignored, f"build products in the context: {ignored[:10]}"


# === the built image ===


def test_the_wheel_holds_every_compiled_extension(image: tuple[Any, Any]) -> None:
    builder, _ = image
    wheels = sorted((builder.stages["builder"].root / "wheels").glob("*.whl"))
    assert [w.name.split("-")[:3] for w in wheels] == [["dranspose_fast", "0.1.0", "cp311"]]
    names = zipfile.ZipFile(wheels[0]).namelist()
    for pyx in sorted((ROOT / "_ext").glob("_*.pyx")):
        assert any(re.fullmatch(rf"dranspose_fast/{pyx.stem}\.cpython-311-.*\.so", n)
                   for n in names), pyx.stem


def test_the_image_runs_as_its_own_user(image: tuple[Any, Any]) -> None:
    _, final = image
    assert not ci.runs_as_root(final)
    assert final.user_record(final.user).name == "dranspose"
    assert final.workdir == final.user_record(final.user).home


def test_the_command_is_the_wheels_not_the_checkouts(image: tuple[Any, Any]) -> None:
    _, final = image
    command = Path(ci.image_command(final, [])[0])
    assert command.parent == final.venv / "bin"
    assert command.read_text().splitlines()[0] == f"#!{final.venv / 'bin' / 'python'}"
    probe = ("import json, dranspose_fast, dranspose_fast._route as r, importlib.metadata as m;"
             "d = m.distribution('dranspose-fast');"
             "print(json.dumps([dranspose_fast.__file__, r.__file__,"
             " d.read_text('direct_url.json')]))")
    done = subprocess.run([str(final.python), "-c", probe], cwd=final.path("."),
                          env=final.process_env(), capture_output=True, text=True, check=True)
    package, extension, direct_url = json.loads(done.stdout)
    site = final.venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert Path(package).is_relative_to(site) and Path(extension).is_relative_to(site)
    assert not Path(package).is_relative_to(ROOT)
    # installed from the wheel the builder stage made (copied to /tmp/wheels, then removed)
    url = json.loads(direct_url)["url"]
    assert url.startswith(f"file://{final.path('/tmp/wheels')}/dranspose_fast-0.1.0-cp311")
    assert not final.path("/tmp/wheels").exists()


def test_default_command_is_help(image: tuple[Any, Any]) -> None:
    _, final = image
    done = ci.run_image(final)
    assert done.returncode == 0, done.stderr
    for command in ("controller", "ingester", "worker", "reducer", "debugworker",
                    "http_ingester", "local", "replay"):
        assert command in done.stdout


def test_example_replay_in_the_image_matches_the_checkouts(
    image: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, final = image
    done = ci.run_image(final, ci.EXAMPLE_REPLAY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "results reduced: 400" in done.stdout
    from dranspose_fast.replay import replay

    monkeypatch.chdir(ROOT)
    replay("examples.roi:RoiWorker", "examples.roi:RoiReducer",
           ["examples/data/eiger.cbors", "examples/data/positions.cbors"],
           parameter_file="examples/parameters.json", out=tmp_path / "ref.h5", progress=False)
    with h5py.File(final.path("example-result.h5")) as got, h5py.File(tmp_path / "ref.h5") as ref:
        assert got["events"][()] == ref["events"][()] == 400
        assert np.array_equal(got["map/count"][()], ref["map/count"][()])
        assert np.allclose(got["map/roi"][()], ref["map/roi"][()], rtol=1e-12)
        assert got.attrs["parameter_roi"] == "[12, 20, 12, 20]"


# === FROM dranspose-fast: the documented pattern for a payload package ===

PAYLOAD_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "beamline-payload"
version = "1.0"
"""

PAYLOAD_MODULE = """\
from dranspose_fast.event import EventData, ResultData


class CountWorker:
    def __init__(self, parameters=None, **kwargs):
        pass

    def process_event(self, event: EventData, parameters=None, tick=False):
        if "eiger" in event.streams and "positions" in event.streams:
            return {"frames": len(event.streams["eiger"].frames)}
        return None


class CountReducer:
    def __init__(self, parameters=None, **kwargs):
        self.seen = set()
        self.publish = {"events": 0, "frames": 0}

    def process_result(self, result: ResultData, parameters=None):
        if result.event_number not in self.seen:  # the first event goes to every worker
            self.seen.add(result.event_number)
            self.publish["events"] += 1
            self.publish["frames"] += result.payload["frames"]
"""


def _documented_from_pattern() -> str:
    text = (ROOT / "docs/deployment.md").read_text()
    found = re.findall(r"^```dockerfile\n(FROM dranspose-fast.*?)^```$", text, re.M | re.S)
    assert len(found) == 1, "docs/deployment.md shows one FROM dranspose-fast Dockerfile"
    return str(found[0])


def test_documented_from_pattern_installs_a_payload(
    image: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, final = image
    project = tmp_path / "project"
    (project / "beamline_payload").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PAYLOAD_PYPROJECT)
    (project / "beamline_payload/__init__.py").write_text("")
    (project / "beamline_payload/count.py").write_text(PAYLOAD_MODULE)
    stages = ci.parse_dockerfile(_documented_from_pattern())
    payload = ci.Builder(project, tmp_path / "work", images={"dranspose-fast": final})
    built = payload.build(stages)
    assert not ci.runs_as_root(built)
    assert not (built.path(".") / "beamline_payload").exists()  # imported from the install
    out = "/tmp/payload-result.h5"
    done = ci.run_image(built, [
        "replay", "-w", "beamline_payload.count:CountWorker",
        "-r", "beamline_payload.count:CountReducer",
        "-f", "examples/data/eiger.cbors", "examples/data/positions.cbors",
        "--out", str(built.path(out))])
    assert done.returncode == 0, done.stdout + done.stderr
    # the same classes replayed by the checkout give the same publish
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(project))
    from dranspose_fast.replay import replay

    replay("beamline_payload.count:CountWorker", "beamline_payload.count:CountReducer",
           ["examples/data/eiger.cbors", "examples/data/positions.cbors"],
           out=tmp_path / "ref.h5", progress=False)
    with h5py.File(built.path(out)) as got, h5py.File(tmp_path / "ref.h5") as ref:
        assert got["events"][()] == ref["events"][()] >= 400
        assert got["frames"][()] == ref["frames"][()] >= 400
