"""Request fixtures of real identity providers (JSON), and the helpers that replay them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx

HERE = Path(__file__).parent


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((HERE / f"{name}.json").read_text()))


def fill(template: Any, **values: Any) -> Any:
    """Replace ``"${key}"`` (whole string: any JSON value) and ``${key}`` inside strings."""
    if isinstance(template, str):
        if template.startswith("${") and template.endswith("}") and template[2:-1] in values:
            return values[template[2:-1]]
        for key, value in values.items():
            template = template.replace("${" + key + "}", str(value))
        return template
    if isinstance(template, list):
        return [fill(v, **values) for v in template]
    if isinstance(template, dict):
        return {k: fill(v, **values) for k, v in template.items()}
    return template


def client(base_url: str, token: str, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(
        base_url=base_url, timeout=30, headers={**headers, "Authorization": f"Bearer {token}"}
    )


def query(**params: Any) -> str:
    """A query string the way IdPs send it: form encoding, ``+`` for spaces."""
    return "&".join(f"{k}={quote_plus(str(v))}" for k, v in params.items())
