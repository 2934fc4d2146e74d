"""Bearer API keys. Every request resolves to a tenant; data of other tenants is invisible (404)."""

from __future__ import annotations

import ipaddress

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from studio.service import TurnService

LOCAL_TENANT = "local"
bearer = HTTPBearer(auto_error=False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def get_service(request: Request) -> TurnService:
    return request.app.state.service


def tenant_of(service: TurnService, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The tenant the request acts for; 401 without a valid key (unless auth is off, loopback only)."""
    if not service.settings.auth.enabled:
        return LOCAL_TENANT
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer API key", headers={"WWW-Authenticate": "Bearer"}
        )
    tenant = service.db.tenant_for_key(credentials.credentials)
    if tenant is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return tenant


def current_tenant(
    service: TurnService = Depends(get_service),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> str:
    return tenant_of(service, credentials)
