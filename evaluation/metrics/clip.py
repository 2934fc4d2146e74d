"""CLIP for scoring: real checkpoints by hub id or local folder (transformers' CLIPModel / CLIPProcessor), or
'tiny', a random-weight CLIP built from a small config with an offline byte-level tokenizer (tests)."""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
"""CMIGBench scores with CLIP ViT-B/32."""

TIS_SCALE = 100.0
"""The official score is `logits_per_image` of ViT-B/32, whose learned logit scale is 100: 100 × cosine."""

_TINY_SEED = 7
_TINY_BOS, _TINY_EOS = 512, 513


class ClipScorer:
    """Unit-norm CLIP embeddings of images and texts, and the raw image features (for the Fréchet distance)."""

    def __init__(self, model: torch.nn.Module, processor: object, device: str = "cpu", batch_size: int = 32) -> None:
        self.model = model.eval()
        self.processor = processor
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_CLIP, device: str = "auto") -> ClipScorer:
        if name_or_path == "tiny":
            model, processor = tiny_clip()
            return cls(model, processor, "cpu")
        from transformers import CLIPModel, CLIPProcessor

        resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        model = CLIPModel.from_pretrained(name_or_path).to(resolved)
        return cls(model, CLIPProcessor.from_pretrained(name_or_path), resolved)

    @torch.inference_mode()
    def image_features(self, images: list[Image.Image]) -> np.ndarray:
        """Projected image embeddings, not normalized, shape (n, d)."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            chunks.append(_as_tensor(self.model.get_image_features(pixel_values=pixels)).float().cpu())
        if not chunks:
            return np.zeros((0, self.embed_dim), dtype=np.float64)
        return torch.cat(chunks).double().numpy()

    @torch.inference_mode()
    def text_features(self, texts: list[str]) -> np.ndarray:
        tokens = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True, max_length=77)
        feats = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        )
        return _as_tensor(feats).float().cpu().double().numpy()

    def image_embeddings(self, images: list[Image.Image]) -> np.ndarray:
        return _unit(self.image_features(images))

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        return _unit(self.text_features(texts))

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)


def _as_tensor(output: object) -> torch.Tensor:
    """transformers 5 may return a model output instead of a bare tensor from get_*_features."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two embedding vectors."""
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else 0.0


def _byte_alphabet() -> list[str]:
    """Byte-level BPE's stand-in characters for bytes 0…255: printable Latin-1 bytes map to themselves, the
    rest to code points from 256 up, in byte order."""
    keep = {*range(33, 127), *range(161, 173), *range(174, 256)}
    shifted = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


@lru_cache(maxsize=1)
def _tiny_vocab_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="eval-tiny-clip-"))
    alphabet = _byte_alphabet()
    vocab = [*alphabet, *(ch + "</w>" for ch in alphabet), "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


@lru_cache(maxsize=1)
def tiny_clip() -> tuple[torch.nn.Module, object]:
    """A random-weight CLIP (fixed seed: every build is the same) and a processor that needs no download."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = _tiny_vocab_dir()
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config={
            "vocab_size": 514,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": _TINY_BOS,
            "eos_token_id": _TINY_EOS,
            "pad_token_id": _TINY_EOS,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(_TINY_SEED)
    model = CLIPModel(config).eval()
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
