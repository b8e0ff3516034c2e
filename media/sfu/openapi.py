"""The OpenAPI document of the local SFU's API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def openapi_document() -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "Switchboard local SFU", "version": "1"}, "paths": {}}
