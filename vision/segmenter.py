"""Box-prompted segmentation with SAM or SAM 2: all boxes of an image in one batched call, and of the
three masks SAM proposes per box, the one with the highest predicted IoU.

SAM runs through transformers' `SamProcessor` (its PIL image processor needs no torchvision). SAM 2's
image processor imports torchvision, so for SAM 2 the few steps it does (square resize, ImageNet
normalization, box rescaling, bilinear mask upsampling) are done here with torch alone."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vision.devices import resolve_device, resolve_dtype

SAM_MODEL_TYPES = frozenset({"sam", "sam2"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
XYXY = tuple[float, float, float, float]


def best_masks(masks: np.ndarray, iou_scores: np.ndarray) -> np.ndarray:
    """masks (boxes, k, H, W) bool, iou_scores (boxes, k) → (boxes, H, W): each box's best-scored mask."""
    best = iou_scores.argmax(axis=1)
    return masks[np.arange(len(masks)), best]


def clip_to_boxes(masks: np.ndarray, boxes: list[XYXY], margin: float) -> np.ndarray:
    """Zero each mask outside its prompt box grown by `margin` × the box size: SAM sometimes leaks into
    neighbours, and a reference must not carry another subject's pixels."""
    out = np.zeros_like(masks)
    height, width = masks.shape[-2:]
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        ix0, iy0 = max(int(np.floor(x0 - mx)), 0), max(int(np.floor(y0 - my)), 0)
        ix1, iy1 = min(int(np.ceil(x1 + mx)), width), min(int(np.ceil(y1 + my)), height)
        out[i, iy0:iy1, ix0:ix1] = masks[i, iy0:iy1, ix0:ix1]
    return out


def sam2_inputs(image: Image.Image, boxes: list[XYXY], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2 preprocessing: image resized to size × size (bilinear), scaled to [0, 1], ImageNet-normalized;
    boxes rescaled into that square. Returns pixel_values (1, 3, size, size), input_boxes (1, n, 4)."""
    width, height = image.size
    array = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    array = (array - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    pixel_values = torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
    scale = torch.tensor([size / width, size / height, size / width, size / height])
    input_boxes = torch.tensor(boxes, dtype=torch.float32)[None] * scale
    return pixel_values, input_boxes


class BoxSegmenter:
    """SAM (`SamModel` + `SamProcessor`) or SAM 2 (`Sam2Model`, processor not needed), chosen by the
    model config's model_type."""

    def __init__(
        self,
        model: Any,
        processor: Any | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        box_margin: float = 0.05,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.device = torch.device(device)
        self.dtype = dtype
        self.box_margin = box_margin
        self.model_type = getattr(model.config, "model_type", "sam")
        if self.model_type not in SAM_MODEL_TYPES:
            raise ValueError(
                f"unsupported segmenter model_type {self.model_type!r}; expected {sorted(SAM_MODEL_TYPES)}"
            )
        if self.model_type == "sam" and processor is None:
            raise ValueError("SAM needs its SamProcessor")
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "facebook/sam-vit-base", device: str = "auto", dtype: str = "auto"
    ) -> BoxSegmenter:
        """facebook/sam-vit-base (or any SAM checkpoint) or a SAM 2 checkpoint such as
        facebook/sam2-hiera-small-hf, from the hub or a local folder."""
        from transformers import AutoConfig

        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        model_type = AutoConfig.from_pretrained(name_or_path).model_type
        if model_type == "sam2":
            from transformers import Sam2Model

            return cls(Sam2Model.from_pretrained(name_or_path, dtype=torch_dtype).to(dev), None, dev, torch_dtype)
        if model_type == "sam":
            from transformers import SamModel, SamProcessor

            model = SamModel.from_pretrained(name_or_path, dtype=torch_dtype).to(dev)
            return cls(model, SamProcessor.from_pretrained(name_or_path), dev, torch_dtype)
        raise ValueError(f"{name_or_path!r} is a {model_type!r} model, not SAM or SAM 2")

    def segment(self, image: Image.Image, boxes: list[XYXY]) -> list[np.ndarray]:
        """One bool mask (H, W) per xyxy box, all boxes prompted in one forward pass."""
        if not boxes:
            return []
        image = image.convert("RGB")
        boxes = [tuple(float(v) for v in box) for box in boxes]  # type: ignore[misc]
        with self._lock, torch.inference_mode():
            outputs, inputs = self._sam2(image, boxes) if self.model_type == "sam2" else self._sam(image, boxes)
            # the best of the k proposals per box is chosen on the low-resolution logits, so only one mask
            # per box is upsampled to the image size
            logits = outputs.pred_masks[0].float().cpu()  # (boxes, k, h, w)
            best = best_masks(logits.numpy(), outputs.iou_scores[0].float().cpu().numpy())  # (boxes, h, w)
            masks = self._upsample(torch.from_numpy(best)[:, None], image, inputs)  # (boxes, H, W) bool
        return list(clip_to_boxes(masks, boxes, self.box_margin))

    def _run(self, pixel_values: torch.Tensor, input_boxes: torch.Tensor) -> Any:
        return self.model(
            pixel_values=pixel_values.to(self.device, self.dtype),
            input_boxes=input_boxes.to(self.device, self.dtype),
            multimask_output=True,
        )

    def _sam(self, image: Image.Image, boxes: list[XYXY]) -> tuple[Any, Any]:
        inputs = self.processor(images=image, input_boxes=[[list(b) for b in boxes]], return_tensors="pt")  # type: ignore[misc]
        return self._run(inputs["pixel_values"], inputs["input_boxes"]), inputs

    def _sam2(self, image: Image.Image, boxes: list[XYXY]) -> tuple[Any, Any]:
        size = int(self.model.config.prompt_encoder_config.image_size)
        return self._run(*sam2_inputs(image, boxes, size)), None

    def _upsample(self, logits: torch.Tensor, image: Image.Image, inputs: Any) -> np.ndarray:
        """(boxes, 1, h, w) logits → (boxes, H, W) bool at threshold 0: SAM's processor removes its padding
        first; SAM 2 has none, a plain bilinear resize."""
        if self.model_type == "sam2":
            upsampled = F.interpolate(logits, (image.height, image.width), mode="bilinear", align_corners=False)
            return (upsampled[:, 0] > 0.0).numpy()
        masks = self.processor.image_processor.post_process_masks(  # type: ignore[union-attr]
            logits[None], inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]
        return np.asarray(masks[:, 0], dtype=bool)
