"""Built-in ingesters by name, and loading of user ingester classes (``module:Class``).

The CLI's ``ingester -c NAME`` accepts a built-in name or ``module.path:Class``; the settings
class comes from the ingester class (``settings_class``, inherited from its built-in base, or
``<Name>Settings`` beside a 0.2-style class ``<Name>Ingester`` in its module).
"""

from __future__ import annotations

import sys
from typing import Any

from dranspose_fast.errors import ClassLoadError
from dranspose_fast.helpers.utils import import_class
from dranspose_fast.ingester import Ingester, IngesterSettings
from dranspose_fast.ingesters.multipart import MultipartIngester, MultipartSettings
from dranspose_fast.ingesters.zmqpull_single import ZmqPullSingleIngester, ZmqPullSingleSettings

__all__ = [
    "BUILTIN_INGESTERS", "MultipartIngester", "MultipartSettings", "ZmqPullSingleIngester",
    "ZmqPullSingleSettings", "create_ingester", "ingester_class", "settings_class",
]

#: Built-in ingester classes by the name the CLI accepts: ``module:Class`` below this
#: package, imported on first use (a protocol's parser dependencies load only when used).
BUILTIN_INGESTERS: dict[str, str] = {
    "ZmqPullSingleIngester": "zmqpull_single:ZmqPullSingleIngester",
    "MultipartIngester": "multipart:MultipartIngester",
    "ZmqPullEigerLegacyIngester": "zmqpull_eiger_legacy:ZmqPullEigerLegacyIngester",
    "ZmqPullStream2Ingester": "zmqpull_stream2:ZmqPullStream2Ingester",
    "ZmqSubXspressIngester": "zmqsub_xspress3:ZmqSubXspressIngester",
    "ZmqSubContrastIngester": "zmqsub_contrast:ZmqSubContrastIngester",
    "ZmqSubPCAPIngester": "zmqsub_pcap:ZmqSubPCAPIngester",
    "ZmqSubAlbaemIngester": "zmqsub_albaem:ZmqSubAlbaemIngester",
    "ZmqSubLecroyIngester": "zmqsub_lecroy:ZmqSubLecroyIngester",
    "TcpPcapIngester": "tcp_positioncap:TcpPcapIngester",
    "HttpSardanaIngester": "http_sardana:HttpSardanaIngester",
}


def ingester_class(name: str) -> type[Ingester]:
    """A built-in name or ``module.path:Class`` naming an ``Ingester`` subclass.

    Raises
    ------
    ClassLoadError
        if the class cannot be loaded or is not an ``Ingester``.
    """
    builtin = BUILTIN_INGESTERS.get(name)
    if builtin is not None:
        name = f"{__name__}.{builtin}"
    elif ":" not in name:
        raise ClassLoadError(f"unknown ingester {name!r}: use one of "
                             f"{sorted(BUILTIN_INGESTERS)} or 'module.path:Class'")
    loaded = import_class(name)
    if not issubclass(loaded, Ingester):
        raise ClassLoadError(f"{name!r} is not a subclass of dranspose_fast.ingester.Ingester")
    return loaded


def settings_class(cls: type[Ingester]) -> type[IngesterSettings]:
    """The settings class an ingester class is configured with."""
    explicit = cls.__dict__.get("settings_class")
    if isinstance(explicit, type) and issubclass(explicit, IngesterSettings):
        return explicit
    module = sys.modules.get(cls.__module__)
    beside = getattr(module, cls.__name__.removesuffix("Ingester") + "Settings", None)
    if isinstance(beside, type) and issubclass(beside, IngesterSettings):
        return beside
    return cls.settings_class


def create_ingester(name: str, **settings: Any) -> Ingester:
    """Load ``name`` and build it with its settings (environment plus ``settings``)."""
    cls = ingester_class(name)
    return cls(settings=settings_class(cls)(**settings))


def __getattr__(name: str) -> Any:
    """The built-in classes and their settings as attributes (dranspose 0.2 exports them here)."""
    if name in BUILTIN_INGESTERS:
        return ingester_class(name)
    ingester = name.removesuffix("Settings") + "Ingester"
    if name.endswith("Settings") and ingester in BUILTIN_INGESTERS:
        return settings_class(ingester_class(ingester))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
