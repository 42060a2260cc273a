"""FastAPI dependencies: each route asks for the parts it uses, by type.

The composition root (proxy/app.py) puts each part on `app.state` under the name below;
nothing else reads `app.state`. A part that is off (memory, learning) is stored as None and
the accessor turns that into the right error for the route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from proxy.gateway.auth import Authenticator
from proxy.gateway.errors import ProxyError


def part(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


def authenticator(request: Request) -> Authenticator:
    return part(request, "authenticator")


Auth = Annotated[Authenticator, Depends(authenticator)]


def caller_tenant(request: Request, auth: Auth) -> str:
    """The calling tenant; authenticates before anything else of the request is read."""
    return auth.tenant_for(request)


def admin_caller(request: Request, auth: Auth) -> None:
    auth.require_admin(request)


Tenant = Annotated[str, Depends(caller_tenant)]


def body_limit(request: Request) -> int:
    return part(request, "max_body_bytes")


BodyLimit = Annotated[int, Depends(body_limit)]


def required(request: Request, name: str, what: str) -> Any:
    """A part that may be off: 404 in OpenAI's envelope when it is."""
    found = part(request, name)
    if found is None:
        raise ProxyError(404, f"{what} is off on this proxy", code="memory_off")
    return found
