"""Settings of every component, from the environment (the names of dranspose 0.2).

Timing intervals are settings too (``DFAST_*``), so tests run them short.
"""

from __future__ import annotations

import os
import random
import socket
import string
from typing import Literal

from pydantic import AliasChoices, Field, RedisDsn, field_validator, model_validator
from pydantic_core import Url
from pydantic_settings import BaseSettings, SettingsConfigDict

from dranspose_fast.protocol import (
    GENERIC_WORKER,
    IngesterName,
    StreamName,
    WorkerName,
    WorkerTag,
    ZmqUrl,
)


class DistributedSettings(BaseSettings):
    """Settings every component shares."""

    model_config = SettingsConfigDict(extra="ignore")

    redis_dsn: RedisDsn = Field(
        RedisDsn("redis://localhost:6379/0"),
        validation_alias=AliasChoices("redis_url", "service_redis_dsn", "redis_dsn"),
    )
    build_meta_file: str | None = "/etc/build_git_meta.json"
    config_ttl: float = Field(10.0, gt=0, validation_alias=AliasChoices("dfast_config_ttl"))
    config_interval: float = Field(
        1.3, gt=0, validation_alias=AliasChoices("dfast_config_interval")
    )
    #: Freed memory a process keeps for the next frames (``dranspose_fast.runtime.heap``); 0:
    #: glibc's defaults, which fault in fresh pages for every frame of 128 KiB or more.
    heap_keep_bytes: int = Field(
        1 << 30, ge=0, validation_alias=AliasChoices("dfast_heap_keep_bytes")
    )
    #: Port of the ``/metrics`` server of a worker or an ingester (docs/metrics.md); unset or
    #: 0: none. The controller and the reducer serve ``/metrics`` on their HTTP port.
    metrics_port: int | None = Field(
        None, ge=0, le=65535, validation_alias=AliasChoices("dfast_metrics_port")
    )
    #: Address the metrics server binds (loopback unless told otherwise; 0.0.0.0 in a pod).
    metrics_host: str = Field(
        "127.0.0.1", validation_alias=AliasChoices("dfast_metrics_host")
    )


def random_worker_name() -> WorkerName:
    suffix = "".join(random.choices(string.ascii_letters, k=10))
    return WorkerName(f"Worker-{socket.gethostname()}-{suffix}")


class WorkerSettings(DistributedSettings):
    worker_class: str | None = None
    worker_name: WorkerName = Field(default_factory=random_worker_name)
    worker_tags: set[WorkerTag] = {GENERIC_WORKER}
    credit_window: int = Field(256, ge=1, validation_alias=AliasChoices("dfast_credit_window"))


class ReducerSettings(DistributedSettings):
    reducer_url: ZmqUrl = Url("tcp://localhost:10200")
    reducer_class: str | None = None


class IngesterSettings(DistributedSettings):
    ingester_streams: list[StreamName]
    ingester_name: IngesterName = IngesterName("")
    ingester_url: ZmqUrl = Url("tcp://localhost:10000")
    dump_path: str | None = None

    @field_validator("dump_path", mode="before")
    @classmethod
    def _fspath(cls, value: object) -> object:
        """0.2 accepts ``dump_path=Path(...)``; kept as text here."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _default_name(self) -> IngesterSettings:
        if not self.ingester_name:
            self.ingester_name = IngesterName("_".join(self.ingester_streams) + "-ingester")
        return self


class CliSettings(BaseSettings):
    """``LOG_LEVEL``: DEBUG, INFO (default), WARNING, ERROR or CRITICAL, any case."""

    model_config = SettingsConfigDict(extra="ignore")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
