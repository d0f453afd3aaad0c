"""The HDF5-REST response shapes of dranspose 0.2's ``helpers.h5types``, as pydantic models.

Our h5dict view (``dranspose_fast.api.h5dict``) builds its JSON without these models (it is a
hot path for viewers polling ``publish``); the models are here so 0.2 code that validates or
builds h5dict responses keeps importing them, and they describe what that view answers
(tests/test_compat_fixes.py validates live responses with them).  Field names follow the HDF
Group REST API (hence the camelCase); ``class`` is a Python keyword, so it is ``class_`` with
the alias ``class``.
"""

from __future__ import annotations

import time
from typing import Any, Literal, NewType

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "H5UUID",
    "H5Attribute",
    "H5Attributes",
    "H5CompType",
    "H5Dataset",
    "H5FloatType",
    "H5Group",
    "H5IntType",
    "H5Link",
    "H5NamedType",
    "H5NumBase",
    "H5Response",
    "H5Root",
    "H5ScalarShape",
    "H5Shape",
    "H5SimpleShape",
    "H5StrType",
    "H5Times",
    "H5Type",
    "H5ValuedAttribute",
]

#: An HDF5-REST object id (``g-...`` for groups, ``d-...`` for datasets).
H5UUID = NewType("H5UUID", str)


class _Aliased(BaseModel):
    """Accepts ``class_`` as well as its alias ``class`` when built."""

    model_config = ConfigDict(populate_by_name=True)


class H5Times(_Aliased):
    created: float = Field(default_factory=time.time)
    lastModified: float = Field(default_factory=time.time)


class H5Response(H5Times):
    root: H5UUID


class H5Root(H5Response):
    """``GET /``: the domain."""

    owner: str = "admin"
    class_: str = Field("domain", alias="class")


class H5Group(H5Response):
    """``GET /groups/{id}``."""

    id: H5UUID
    linkCount: int = 0
    attributeCount: int = 0


class H5StrType(_Aliased):
    """Variable-length UTF-8 text."""

    class_: Literal["H5T_STRING"] = Field("H5T_STRING", alias="class")
    length: Literal["H5T_VARIABLE"] = "H5T_VARIABLE"
    charSet: Literal["H5T_CSET_UTF8"] = "H5T_CSET_UTF8"
    strPad: Literal["H5T_STR_NULLTERM"] = "H5T_STR_NULLTERM"


class H5NumBase(_Aliased):
    """A numeric type; ``base`` is an HDF5 predefined type such as ``H5T_IEEE_F64LE``."""

    base: str

    @field_validator("base")
    @classmethod
    def base_must_start(cls, value: str) -> str:
        if not value.startswith("H5T_"):
            raise ValueError(f"type base must start with H5T_, not {value!r}")
        return value


class H5IntType(H5NumBase):
    class_: Literal["H5T_INTEGER"] = Field("H5T_INTEGER", alias="class")


class H5FloatType(H5NumBase):
    class_: Literal["H5T_FLOAT"] = Field("H5T_FLOAT", alias="class")


class H5CompType(_Aliased):
    """A compound (numpy structured) type."""

    class_: Literal["H5T_COMPOUND"] = Field("H5T_COMPOUND", alias="class")
    fields: list[H5NamedType]


H5Type = H5StrType | H5FloatType | H5IntType | H5CompType


class H5NamedType(_Aliased):
    """One field of a compound type."""

    name: str
    type: H5Type


class H5ScalarShape(_Aliased):
    class_: Literal["H5S_SCALAR"] = Field("H5S_SCALAR", alias="class")


class H5SimpleShape(_Aliased):
    class_: Literal["H5S_SIMPLE"] = Field("H5S_SIMPLE", alias="class")
    dims: list[int]


H5Shape = H5SimpleShape | H5ScalarShape


class H5Attribute(H5Times):
    """An entry of ``GET /{groups|datasets}/{id}/attributes`` (without its value)."""

    name: str
    type: H5Type
    shape: H5Shape


class H5ValuedAttribute(H5Attribute):
    """``GET /{groups|datasets}/{id}/attributes/{name}``."""

    value: Any


class H5Attributes(_Aliased):
    attributes: list[H5Attribute]


class H5Link(H5Times):
    """A hard link from a group to a member."""

    class_: Literal["H5L_TYPE_HARD"] = Field("H5L_TYPE_HARD", alias="class")
    collection: Literal["datasets", "groups"]
    id: H5UUID
    title: str


class H5Dataset(H5Times):
    """``GET /datasets/{id}``."""

    id: H5UUID
    attributeCount: int = 0
    shape: H5Shape
    type: H5Type
    creationProperties: dict[str, str | dict[str, str]] = {
        "allocTime": "H5D_ALLOC_TIME_LATE",
        "fillTime": "H5D_FILL_TIME_IFSET",
        "layout": {"class": "H5D_CONTIGUOUS"},
    }


H5CompType.model_rebuild()
H5NamedType.model_rebuild()
