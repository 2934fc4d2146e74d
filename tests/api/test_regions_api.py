"""Masks in explicit plans through the API and the SDK (docs/regions.md): accepted, stored, drawn with the box
derived; bad masks are a 422 naming the field, and nothing is half-written."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from api.client import _turn_request
from studio.plan import PlanItem, TurnPlan
from studio.regions import RegionMask
from tests.api.conftest import png_bomb, wait_for_turn
from tests.api.test_api import new_session


def _mask_png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), "L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _body(item: dict) -> dict:
    return {"plan": {"height": 64, "width": 96, "background": "a street", "items": [{"subject_id": "1", **item}]}}


def test_a_mask_plan_is_accepted_and_drawn_with_its_derived_box(client: TestClient, keys: dict, service: tuple) -> None:
    session_id = new_session(client, keys["a"])
    array = np.zeros((32, 48), dtype=np.uint8)  # half the canvas size: resampled
    array[4:20, 2:22] = 255
    item = {"phrase": "a girl", "mask": {"png": _mask_png(array)}, "mask_std": 2.0, "negative": "blurry"}
    response = client.post(f"/v1/sessions/{session_id}/turns", json=_body(item), headers=keys["a"])
    assert response.status_code == 202, response.text
    turn = wait_for_turn(client, keys["a"], session_id, 1)
    assert turn["status"] == "done", turn
    job = service[1].drawer.jobs[-1]
    drawn = job.plan.items[0]
    assert drawn.mask is not None and drawn.mask_std == 2.0 and drawn.negative == "blurry"
    assert drawn.box is not None and (drawn.box.x, drawn.box.w) == (3.0, 42.0)
    sdk_plan = TurnPlan(  # the SDK sends a TurnPlan as model_dump(mode="json"): the PNG as base64
        height=64,
        width=96,
        items=[
            PlanItem(
                subject_id="1",
                phrase="a girl",
                mask=RegionMask(png=base64.b64decode(_mask_png(array))),
                prompt_strength=0.8,
            )
        ],
    )
    response = client.post(
        f"/v1/sessions/{session_id}/turns", json=_turn_request(None, sdk_plan, None), headers=keys["a"]
    )
    assert response.status_code == 202, response.text
    assert wait_for_turn(client, keys["a"], session_id, 2)["status"] == "done"
    assert service[1].drawer.jobs[-1].plan.items[0] == sdk_plan.items[0]


def test_bad_masks_are_422_naming_the_field(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    url = f"/v1/sessions/{session_id}/turns"
    cases = [
        ({"phrase": "a girl"}, "box"),
        ({"phrase": "a girl", "mask": {"png": "not base64!"}}, "png"),
        ({"phrase": "a girl", "mask": {"png": base64.b64encode(png_bomb()).decode()}}, "png"),
        ({"phrase": "a girl", "mask": {"png": _mask_png(np.zeros((64, 96)))}}, "items[0].mask"),
        ({"phrase": "a girl", "mask": {"polygon": [[500, 500], [600, 500], [600, 600]]}}, "items[0].mask"),
        ({"phrase": "a girl", "mask": {"polygon": [[1, 1], [2, 2]]}}, "polygon"),
        (
            {"phrase": "a girl", "mask": {"polygon": [[1, 1], [20, 2], [9, 9]], "png": _mask_png(np.ones((4, 4)))}},
            "mask",
        ),
        ({"phrase": "a girl", "box": {"x": 0, "y": 0, "w": 9, "h": 9}, "mask_std": 1000}, "mask_std"),
    ]
    for item, field in cases:
        response = client.post(url, json=_body(item), headers=keys["a"])
        assert response.status_code == 422, (item, response.text)
        assert field in str(response.json()["detail"]), (field, response.json())
    bad_sampler = {**_body({"phrase": "a girl", "box": {"x": 0, "y": 0, "w": 9, "h": 9}}), "settings": {"sampler": "x"}}
    response = client.post(url, json=bad_sampler, headers=keys["a"])
    assert response.status_code == 422 and "sampler" in str(response.json()["detail"])
    assert client.get(url, headers=keys["a"]).json() == []  # nothing half-written
