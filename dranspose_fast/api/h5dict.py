"""HDF5-REST "partial view" of a reducer's ``publish`` dict (dranspose 0.2's
``dranspose.helpers.h5dict``, as h5pyd reads it).

A read-only subset of the HDF Group REST API for 0.2 clients (silx, older h5pyd) and h5pyd
1.0: nested dicts are groups, other values are datasets, ``<name>_attrs`` siblings (and the root
``_attrs``) are attributes. The router reads ``request.app.state.get_data()``, which returns
``(publish, lock)``; every walk of ``publish`` happens with ``lock`` held, and only the selected
part of a dataset is copied before the lock is released and the body is compressed.

Object ids are stateless paths. dranspose 0.2 clients get ``g-h5dict-<HEX>`` / ``d-h5dict-<HEX>``
(HEX = uppercase base16 of the absolute path). h5pyd 1.0 only accepts ids of exactly 36
characters after the ``g-``/``d-`` prefix, so for requests in its style (``/?getobjs=...``, or an
id that is already in that form) ids are padded with ``-`` to that length, and paths too long for
that become ``h5hash-<29 hex digits of blake2b(path)>``, resolved through a bounded cache and, on a
miss, by walking ``publish``. Every route accepts every form.

Status codes: 404 for unknown ids, paths, links, attributes, non-dict groups and values with no
HDF5 type; 400 for a malformed ``select``; 503 (with ``Retry-After``) when ``publish`` stays locked
longer than ``app.state.h5dict_lock_timeout`` seconds (default :data:`DEFAULT_LOCK_TIMEOUT`).
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Body, FastAPI, HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dranspose_fast.api.h5types import (
    Collection,
    ObjectRef,
    SelectionError,
    UnknownIdError,
    UnsupportedValueError,
    describe,
    find_digest,
    is_link_name,
    jsonable,
    make_id,
    parse_id,
    parse_select,
    wire_dtype,
)

__all__ = ["DEFAULT_LOCK_TIMEOUT", "GZIP_LEVEL", "GZIP_MIN_BYTES", "create_app", "router"]

logger = logging.getLogger(__name__)

router = APIRouter()

DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a request waits for ``publish_rlock`` before answering 503."""
GZIP_MIN_BYTES = 1000
"""Raw dataset bodies larger than this are gzipped when the client accepts gzip (as in 0.2)."""
GZIP_LEVEL = 7

_ATTRS = "_attrs"
_STARTED = time.time()
# threading primitives whose acquire() takes a timeout; others are entered with a plain `with`
_TIMED_LOCKS: tuple[type, ...] = (
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Condition,
    threading.Semaphore,
)

GetData = Callable[[], tuple[Any, AbstractContextManager[Any]]]


class JSONResponse(Response):
    """JSON that keeps NaN and infinities (Python's ``json`` reads them back)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


# === Walking publish ===


def _parse_id(uuid: str, collection: Collection) -> ObjectRef:
    try:
        return parse_id(uuid, collection)
    except UnknownIdError as exc:
        raise HTTPException(404, str(exc)) from None


def _resolve(data: Any, ref: ObjectRef) -> tuple[Any, tuple[str, ...]]:
    parts = ref.parts
    if parts is None:
        parts = find_digest(data, ref.digest)
        if parts is None:
            raise HTTPException(404, f"no object in publish has the hashed id {ref.digest!r}")
    obj = data
    for depth, key in enumerate(parts):
        where = "/" + "/".join(parts[:depth])
        if not isinstance(obj, dict):
            raise HTTPException(404, f"path {ref.path!r}: {where!r} is not a group")
        if key not in obj or not is_link_name(key):
            raise HTTPException(404, f"path {ref.path!r}: no key {key!r} in {where!r}")
        obj = obj[key]
    if ref.collection == "groups" and not isinstance(obj, dict):
        raise HTTPException(
            404, f"group {ref.path!r} is a {type(obj).__name__}, not a dict: not a group"
        )
    if ref.collection == "datasets" and isinstance(obj, dict):
        raise HTTPException(404, f"dataset {ref.path!r} is a dict: it is a group")
    return obj, parts


@contextmanager
def _reading(request: Request) -> Iterator[Any]:
    """Yield ``publish`` with its lock held; 503 if the lock stays taken too long."""
    data, lock = request.app.state.get_data()
    if isinstance(lock, _TIMED_LOCKS):
        timeout = getattr(request.app.state, "h5dict_lock_timeout", DEFAULT_LOCK_TIMEOUT)
        timed = cast(Any, lock)
        if not timed.acquire(timeout=timeout):
            raise HTTPException(
                503, f"publish is locked (waited {timeout} s)", headers={"Retry-After": "1"}
            )
        try:
            yield data
        finally:
            timed.release()
    else:
        with lock:
            yield data


# === JSON bodies ===


def _attrs_dict(data: Any, parts: tuple[str, ...]) -> dict[Any, Any]:
    if parts:
        parent = data
        for key in parts[:-1]:
            parent = parent[key]
        attrs = parent.get(parts[-1] + _ATTRS)
    else:
        attrs = data.get(_ATTRS) if isinstance(data, dict) else None
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        logger.warning(
            "h5dict: attributes of '/%s' are a %s, not a dict",
            "/".join(parts),
            type(attrs).__name__,
        )
        return {}
    return attrs


def _attribute(name: str, value: Any, where: str, with_value: bool) -> dict[str, Any] | None:
    try:
        desc = describe(value, f"attribute {name!r} of {where!r}")
    except UnsupportedValueError as exc:
        logger.warning("h5dict: skipped %s", exc)
        return None
    now = time.time()
    entry: dict[str, Any] = {
        "name": name,
        "type": desc.type,
        "shape": desc.shape,
        "created": _STARTED,
        "lastModified": now,
    }
    if with_value:
        entry["value"] = value if desc.array is None else jsonable(desc.array.tolist())
    return entry


def _attributes(data: Any, parts: tuple[str, ...], with_value: bool) -> list[dict[str, Any]]:
    where = "/" + "/".join(parts)
    out = []
    for key, val in _attrs_dict(data, parts).items():
        if not isinstance(key, str):
            logger.warning("h5dict: non-string attribute name %r of %r skipped", key, where)
            continue
        entry = _attribute(key, val, where, with_value)
        if entry is not None:
            out.append(entry)
    return out


def _link(parts: tuple[str, ...], target: Any, hsds: bool) -> dict[str, Any]:
    collection: Collection = "groups" if isinstance(target, dict) else "datasets"
    return {
        "class": "H5L_TYPE_HARD",
        "collection": collection,
        "id": make_id(collection, parts, hsds),
        "title": parts[-1],
        "created": _STARTED,
        "lastModified": time.time(),
    }


def _links(obj: dict[Any, Any], parts: tuple[str, ...], hsds: bool) -> list[dict[str, Any]]:
    return [_link((*parts, key), val, hsds) for key, val in obj.items() if is_link_name(key)]


def _times() -> dict[str, float]:
    return {"created": _STARTED, "lastModified": time.time()}


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() not in ("0", "false", "")


# === Routes ===


@router.get("/", response_class=JSONResponse)
def read_root(req: Request) -> JSONResponse:
    """Domain: the root group id (h5pyd 1.0 asks with ``getobjs`` and gets its id form)."""
    hsds = "getobjs" in req.query_params
    with _reading(req) as data:
        if not isinstance(data, dict):
            raise HTTPException(404, f"publish is a {type(data).__name__}, not a dict")
    return JSONResponse(
        {"root": make_id("groups", (), hsds), "owner": "admin", "class": "domain", **_times()}
    )


@router.get("/about", response_class=JSONResponse)
@router.get("/info", response_class=JSONResponse)
def about() -> JSONResponse:
    """Server description that h5pyd requests before opening the domain."""
    return JSONResponse(
        {
            "name": "dranspose-fast h5dict",
            "about": "read-only partial view of publish",
            "state": "READY",
            "start_time": _STARTED,
        }
    )


@router.get("/groups/{uuid}", response_class=JSONResponse)
def group(
    req: Request, uuid: str, include_links: str | None = None, include_attrs: str | None = None
) -> JSONResponse:
    """A group; with ``include_links``/``include_attrs`` also its links and attributes."""
    ref = _parse_id(uuid, "groups")
    with _reading(req) as data:
        obj, parts = _resolve(data, ref)
        attrs = _attributes(data, parts, with_value=_flag(include_attrs))
        ret: dict[str, Any] = {
            "id": uuid,
            "root": make_id("groups", (), ref.hsds),
            "linkCount": sum(1 for key in obj if is_link_name(key)),
            "attributeCount": len(attrs),
            **_times(),
        }
        if _flag(include_links):
            ret["links"] = {ln["title"]: ln for ln in _links(obj, parts, ref.hsds)}
    if _flag(include_attrs):
        ret["attributes"] = {a["name"]: a for a in attrs}
    return JSONResponse(ret)


@router.get("/groups/{uuid}/links", response_class=JSONResponse)
def links(req: Request, uuid: str) -> JSONResponse:
    """The links of a group; ``<name>_attrs`` keys are hidden."""
    ref = _parse_id(uuid, "groups")
    with _reading(req) as data:
        obj, parts = _resolve(data, ref)
        return JSONResponse({"links": _links(obj, parts, ref.hsds)})


@router.get("/groups/{uuid}/links/{name}", response_class=JSONResponse)
def link(req: Request, uuid: str, name: str) -> JSONResponse:
    """One link of a group."""
    ref = _parse_id(uuid, "groups")
    with _reading(req) as data:
        obj, parts = _resolve(data, ref)
        if name not in obj or not is_link_name(name):
            raise HTTPException(404, f"group {ref.path!r} has no link {name!r}")
        return JSONResponse({"link": _link((*parts, name), obj[name], ref.hsds)})


@router.get("/datasets/{uuid}", response_class=JSONResponse)
def datasets(req: Request, uuid: str, include_attrs: str | None = None) -> JSONResponse:
    """Shape, type and attribute count of a dataset."""
    ref = _parse_id(uuid, "datasets")
    with _reading(req) as data:
        obj, parts = _resolve(data, ref)
        try:
            desc = describe(obj, f"dataset {ref.path!r}")
        except UnsupportedValueError as exc:
            logger.error("h5dict: %s", exc)
            raise HTTPException(404, str(exc)) from None
        attrs = _attributes(data, parts, with_value=_flag(include_attrs))
    ret: dict[str, Any] = {
        "id": uuid,
        "root": make_id("groups", (), ref.hsds),
        "shape": desc.shape,
        "type": desc.type,
        "attributeCount": len(attrs),
        "creationProperties": {
            "allocTime": "H5D_ALLOC_TIME_LATE",
            "fillTime": "H5D_FILL_TIME_IFSET",
            "layout": {"class": "H5D_CONTIGUOUS"},
        },
        **_times(),
    }
    if _flag(include_attrs):
        ret["attributes"] = {a["name"]: a for a in attrs}
    return JSONResponse(ret)


def _selected_copy(obj: Any, slices: list[slice] | None, where: str) -> Any:
    """Copy the selected part of a dataset value: a JSON-able value or a C-order ndarray."""
    try:
        desc = describe(obj, where)
    except UnsupportedValueError as exc:
        logger.error("h5dict: %s", exc)
        raise HTTPException(404, str(exc)) from None
    arr = desc.array
    if arr is None:  # Python int/float/str: immutable, sent as JSON
        if slices:
            raise HTTPException(400, f"select on scalar {where}")
        return obj
    if slices and len(slices) > arr.ndim:
        raise HTTPException(400, f"select has {len(slices)} dimensions but {where} has {arr.ndim}")
    part = arr[tuple(slices)] if slices else arr
    if desc.as_json:
        return jsonable(part.tolist())
    wire = wire_dtype(arr.dtype)
    if desc.owned:  # built from a list for this request: nobody else can change it
        return np.ascontiguousarray(part, dtype=wire)
    return np.array(part, dtype=wire, order="C", copy=True)


def _value_response(req: Request, uuid: str, select: str | None) -> Response:
    ref = _parse_id(uuid, "datasets")
    try:
        slices = parse_select(select) if select is not None else None
    except SelectionError as exc:
        raise HTTPException(400, str(exc)) from None
    with _reading(req) as data:
        obj, _ = _resolve(data, ref)
        value = _selected_copy(obj, slices, f"dataset {ref.path!r}")
    if not isinstance(value, np.ndarray):
        return JSONResponse({"value": value})
    body: bytes | memoryview = value.reshape(-1).view(np.uint8).data
    headers = {}
    if len(body) > GZIP_MIN_BYTES and "gzip" in req.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return Response(content=body, media_type="application/octet-stream", headers=headers)


@router.get("/datasets/{uuid}/value", response_model=None)
def values(req: Request, uuid: str, select: str | None = None) -> Response:
    """Dataset value: JSON for Python scalars and strings, else raw C-order bytes (maybe gzip)."""
    return _value_response(req, uuid, select)


@router.post("/datasets/{uuid}/value", response_model=None)
def values_post(
    req: Request,
    uuid: str,
    body: dict[str, Any] = Body(default_factory=dict),  # noqa: B008
) -> Response:
    """The same as :func:`values`, with ``select`` in a JSON body (h5pyd sends long ones so)."""
    select = body.get("select")
    if select is not None and not isinstance(select, str):
        raise HTTPException(400, f"select must be a string, got {type(select).__name__}")
    return _value_response(req, uuid, select)


@router.get("/{typ}/{uuid}/attributes/{name}", response_class=JSONResponse)
def attribute(req: Request, typ: Collection, uuid: str, name: str) -> JSONResponse:
    """One attribute with its value (ndarrays as nested lists)."""
    ref = _parse_id(uuid, typ)
    with _reading(req) as data:
        _, parts = _resolve(data, ref)
        attrs = _attrs_dict(data, parts)
        if name not in attrs:
            raise HTTPException(404, f"{ref.path!r} has no attribute {name!r}")
        entry = _attribute(name, attrs[name], ref.path, with_value=True)
    if entry is None:
        raise HTTPException(404, f"attribute {name!r} of {ref.path!r} has no HDF5 type")
    return JSONResponse(entry)


@router.get("/{typ}/{uuid}/attributes", response_class=JSONResponse)
def attributes(req: Request, typ: Collection, uuid: str) -> JSONResponse:
    """Names, types and shapes of the attributes of a group or dataset."""
    ref = _parse_id(uuid, typ)
    with _reading(req) as data:
        _, parts = _resolve(data, ref)
        return JSONResponse({"attributes": _attributes(data, parts, with_value=False)})


def create_app(
    get_data: GetData, prefix: str = "", lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> FastAPI:
    """Build a FastAPI app serving ``get_data()``'s publish dict at ``prefix``.

    Parameters
    ----------
    get_data
        Returns ``(publish, lock)``; ``lock`` is held while a request reads ``publish``.
    prefix
        Mount point such as ``"/results"``; empty for ``/``.
    lock_timeout
        Seconds to wait for ``lock`` before answering 503.

    Returns
    -------
    FastAPI
        The app; ``app.state.get_data`` and ``app.state.h5dict_lock_timeout`` are set.
    """
    app = FastAPI()
    app.state.get_data = get_data
    app.state.h5dict_lock_timeout = lock_timeout
    app.include_router(router, prefix=prefix.rstrip("/"))
    return app
