"""Typed parameter descriptions (dranspose 0.2 semantics).

A worker or reducer class lists its parameters in ``describe_parameters()``; values travel as
raw bytes and are parsed with the description's ``from_bytes``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import cbor2
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from dranspose_fast.errors import ParameterFileError
from dranspose_fast.helpers import safe_pickle
from dranspose_fast.helpers.safe_pickle import AllowList, UnsafePickleError
from dranspose_fast.protocol import ParameterName, WorkParameter

__all__ = [
    "BinaryParameter", "BoolParameter", "FloatParameter", "IntParameter", "Parameter",
    "ParameterBase", "ParameterList", "ParameterType", "StrParameter",
    "dump_parameter_file", "load_parameter_file", "value_problem",
]


class ParameterBase(BaseModel):
    name: ParameterName
    description: str | None = None

    @staticmethod
    def to_bytes(val: Any) -> bytes:
        return str(val).encode("utf8")


class StrParameter(ParameterBase):
    dtype: Literal["str"] = "str"
    default: str = ""

    @staticmethod
    def from_bytes(by: bytes) -> str:
        try:
            return by.decode("utf8")
        except ValueError:
            return ""


class BinaryParameter(ParameterBase):
    dtype: Literal["binary"] = "binary"
    default: bytes = b""

    @staticmethod
    def from_bytes(by: bytes) -> bytes:
        return by

    @staticmethod
    def to_bytes(val: Any) -> bytes:
        return bytes(val)


class IntParameter(ParameterBase):
    dtype: Literal["int"] = "int"
    default: int = 0

    @staticmethod
    def from_bytes(by: bytes) -> int:
        try:
            return int(by)
        except ValueError:
            return 0


class FloatParameter(ParameterBase):
    dtype: Literal["float"] = "float"
    default: float = 0.0

    @staticmethod
    def from_bytes(by: bytes) -> float:
        try:
            return float(by)
        except ValueError:
            return 0.0


class BoolParameter(ParameterBase):
    dtype: Literal["bool"] = "bool"
    default: bool = False

    @staticmethod
    def from_bytes(by: bytes) -> bool:
        return by == b"True"


def value_problem(desc: ParameterBase, data: bytes) -> str | None:
    """Why ``data`` is no value of the described parameter (None: it is one).

    The ``from_bytes`` readers above turn what they cannot read into the default (0.2's
    behaviour, kept for the components); the controller refuses such a value instead, so a
    typo does not silently become 0 or False.
    """
    if isinstance(desc, BinaryParameter):
        return None
    try:
        text = data.decode("utf8")
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    try:
        if isinstance(desc, IntParameter):
            int(text)
        elif isinstance(desc, FloatParameter):
            float(text)
    except ValueError:
        kind = "an integer" if isinstance(desc, IntParameter) else "a number"
        return f"is {text[:40]!r}, not {kind}"
    if isinstance(desc, BoolParameter) and text not in ("True", "False"):
        return f"is {text[:40]!r}, not True or False"
    return None


ParameterType = Annotated[
    StrParameter | BinaryParameter | IntParameter | FloatParameter | BoolParameter,
    Field(discriminator="dtype"),
]

Parameter: TypeAdapter[ParameterType] = TypeAdapter(ParameterType)
ParameterList: TypeAdapter[list[ParameterType]] = TypeAdapter(list[ParameterType])


# === Parameter files (replay ``-p``, controller dumps) ===


def load_parameter_file(path: str | os.PathLike[str]) -> dict[ParameterName, WorkParameter]:
    """Read a parameter file: a JSON, CBOR or pickle list of ``{"name", "data"}`` records.

    JSON records carry ``data`` as text (the controller's ``parameters-<uuid>.json``), CBOR
    records as bytes (``parameters-<uuid>.cbor`` when a value holds a NUL byte). A pickle (a
    list of ``WorkParameter`` or of such dicts, as dranspose 0.2 wrote) is read only from a
    file named ``*.pkl`` or ``*.pickle``, and only as plain data (``helpers.safe_pickle``):
    a file that names any other class is refused, it never runs code. Any other file is tried
    as JSON, then as CBOR.

    Raises
    ------
    FileNotFoundError
        if the file does not exist.
    ParameterFileError
        naming the file and what each format reported.
    """
    raw = Path(path).read_bytes()
    records: Any = None
    if Path(path).suffix.lower() in _PICKLE_SUFFIXES:
        try:
            records = safe_pickle.loads(raw, _PICKLED_PARAMETERS)
        except UnsafePickleError as exc:
            raise ParameterFileError(f"{path}: cannot read parameters: {exc}") from None
    else:
        problems: list[str] = []
        try:
            records = json.loads(raw.decode("utf8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"not JSON ({exc})")
            try:
                records = _whole_cbor(raw)
            except Exception as exc2:
                problems.append(f"not CBOR ({type(exc2).__name__}: {exc2})")
                raise ParameterFileError(
                    f"{path}: cannot read parameters: " + "; ".join(problems)
                    + "; a pickle is read only from a file named *.pkl or *.pickle"
                ) from None
    try:
        params = _PARAMETER_RECORDS.validate_python(records)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ParameterFileError(
            f"{path}: expected a list of {{'name', 'data'}} records; at {where or 'top'}: "
            f"{first['msg']}"
        ) from None
    return {ParameterName(p.name): p for p in params}


def _whole_cbor(raw: bytes) -> Any:
    """One CBOR item that is the whole file (a pickle starts like an empty CBOR array)."""
    source = io.BytesIO(raw)
    value = cbor2.CBORDecoder(source).decode()
    if source.tell() != len(raw):
        raise ValueError(f"{len(raw) - source.tell()} bytes after the first CBOR item")
    return value


def dump_parameter_file(
    parameters: dict[ParameterName, WorkParameter], path: str | os.PathLike[str]
) -> None:
    """Write parameters as JSON, or as CBOR when a value is not NUL-free UTF-8 (as 0.2 does)."""
    values = [(name, p.data) for name, p in sorted(parameters.items())]
    try:
        if any(b"\x00" in data for _, data in values):
            raise UnicodeDecodeError("utf8", b"", 0, 1, "NUL byte")
        text = [{"name": n, "data": d.decode("utf8")} for n, d in values]
    except UnicodeDecodeError:
        with open(path, "wb") as fh:
            cbor2.dump([{"name": n, "data": d} for n, d in values], fh)
        return
    Path(path).write_text(json.dumps(text))


_PARAMETER_RECORDS: TypeAdapter[list[WorkParameter]] = TypeAdapter(list[WorkParameter])
#: File names a parameter pickle must have (deliberately not sniffed from the content).
_PICKLE_SUFFIXES = (".pkl", ".pickle")
#: What a parameter pickle may hold beside plain data: 0.2's records, read as ours.
_PICKLED_PARAMETERS = AllowList(
    {f"{module}:WorkParameter": WorkParameter
     for module in ("dranspose.protocol", "dranspose_fast.protocol")},
    hint=" in a parameter file (it holds WorkParameter records or {name, data} dicts)")
