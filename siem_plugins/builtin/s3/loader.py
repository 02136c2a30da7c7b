"""botocore's data loader, shared by every sink: the S3 model it parses is needed both to
build clients (``client``) and to check ``storage_class`` (``settings``)."""

from __future__ import annotations

import threading
from typing import Any

_loader_lock = threading.Lock()
_loader: Any = None


def shared_loader() -> Any:
    """One botocore data loader for every sink: parsing the S3 model costs ~0.2 s per
    fresh session, and a config may build many sinks."""
    global _loader
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
        return _loader


def storage_classes() -> tuple[str, ...]:
    """The storage classes botocore's S3 model knows (``STANDARD``, ``GLACIER_IR``, ...):
    a new one AWS adds is accepted as soon as botocore is upgraded."""
    model = shared_loader().load_service_model("s3", "service-2")
    return tuple(model["shapes"]["StorageClass"]["enum"])
