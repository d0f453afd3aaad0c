"""The files a scan leaves when the ``dump_prefix`` parameter is set: its mapping and its
parameters, named and written as dranspose 0.2 writes them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cbor2
from pydantic import UUID4

from dranspose_fast.parameters import dump_parameter_file
from dranspose_fast.protocol import ParameterName, WorkParameter

logger = logging.getLogger("dranspose_fast.controller.dumps")


def dump_scan(prefix_value: bytes, uid: UUID4, sequence_json: dict[str, Any],
              params: dict[ParameterName, WorkParameter]) -> bool:
    """``write_scan_dumps`` under the ``dump_prefix`` parameter's value, logged; False if a
    file could not be written (an empty prefix writes nothing)."""
    prefix = prefix_value.decode("utf8", errors="replace")
    if not prefix:
        return True
    try:
        mapping_file, param_file = write_scan_dumps(prefix, uid, sequence_json, params)
    except OSError as exc:
        logger.error("could not write the dumps with prefix %r: %s", prefix, exc)
        return False
    logger.info("dumped the mapping to %s and the parameters to %s", mapping_file, param_file)
    return True


def write_scan_dumps(
    prefix: str, uid: UUID4, sequence_json: dict[str, Any],
    params: dict[ParameterName, WorkParameter],
) -> tuple[str, str]:
    """Write a scan's mapping (``{prefix}mapping-{uuid}.json``) and parameters as dranspose 0.2
    does; returns the two paths.

    The parameters go to ``parameters-{uuid}.json`` (``data`` as text) when every value is
    NUL-free UTF-8, else to ``parameters-{uuid}.cbor``, where, as in 0.2, the text values are
    still CBOR text and only the others are byte strings.

    Raises ``OSError`` when a file cannot be written.
    """
    mapping_file = f"{prefix}mapping-{uid}.json"
    texts = {name: _as_text(p.data) for name, p in params.items()}
    binary = any(text is None for text in texts.values())
    param_file = f"{prefix}parameters-{uid}.{'cbor' if binary else 'json'}"
    Path(mapping_file).write_text(json.dumps(sequence_json))
    if binary:
        records = [
            {"name": name, "data": params[name].data if text is None else text}
            for name, text in sorted(texts.items())
        ]
        Path(param_file).write_bytes(cbor2.dumps(records))
    else:
        dump_parameter_file(params, param_file)
    return mapping_file, param_file


def _as_text(data: bytes) -> str | None:
    """``data`` as text if it is NUL-free UTF-8 (0.2's test for a text parameter), else None."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf8")
    except UnicodeDecodeError:
        return None
