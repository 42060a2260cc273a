"""A small HTTP client for a running proxy's admin endpoints (used by the admin commands)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx


class AdminError(Exception):
    """The proxy refused or could not be reached; the message says which."""


class AdminClient:
    def __init__(self, url: str, admin_key: str | None, timeout_s: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self.url = url.rstrip("/").removesuffix("/v1")
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    @staticmethod
    def tenant_path(tenant: str, *parts: str) -> str:
        return "/admin/tenants/" + "/".join(quote(p, safe="") for p in (tenant, *parts))

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self._send("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def delete(self, path: str) -> Any:
        return self._json(self._send("DELETE", path))

    def lines(self, path: str) -> Iterator[str]:
        try:
            with self._client.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    raise AdminError(_message(response))
                yield from response.iter_lines()
        except httpx.HTTPError as error:
            raise AdminError(f"cannot reach {self.url}: {error}") from error

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise AdminError(f"cannot reach {self.url}: {error}") from error
        if response.status_code != 200:
            raise AdminError(_message(response))
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return response.json()


def _message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("error", {}).get("message")
    except (ValueError, AttributeError):
        detail = None
    return f"{response.status_code}: {detail or response.text[:300]}"
