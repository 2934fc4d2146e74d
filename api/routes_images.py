"""Image bytes by id, visible only to the tenant whose session holds them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response, status

from api.auth import current_tenant, get_service
from api.errors import error_responses
from api.urls import IMAGES_PATH
from studio.service import TurnService
from studio.storage.images import ImageNotFound

router = APIRouter(prefix=IMAGES_PATH, tags=["images"], responses=error_responses(401, 404, 422))


@router.get("/{image_id}", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def get_image(
    image_id: str, tenant: str = Depends(current_tenant), service: TurnService = Depends(get_service)
) -> Response:
    if not service.db.image_visible_to(image_id, tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_id} not found")
    try:
        data = service.images.get(image_id)
    except ImageNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_id} not found") from exc
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=31536000, immutable"})
