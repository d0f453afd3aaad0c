"""Typed parameter descriptions (dranspose 0.2 semantics, reference §2.4).

A worker or reducer class lists its parameters in ``describe_parameters()``; values travel as
raw bytes and are parsed with the description's ``from_bytes``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from dranspose_fast.protocol import ParameterName


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


ParameterType = Annotated[
    StrParameter | BinaryParameter | IntParameter | FloatParameter | BoolParameter,
    Field(discriminator="dtype"),
]

Parameter: TypeAdapter[ParameterType] = TypeAdapter(ParameterType)
ParameterList: TypeAdapter[list[ParameterType]] = TypeAdapter(list[ParameterType])
