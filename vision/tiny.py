"""Tiny random-weight Grounding DINO, SAM and SAM 2 built from small configs: offline, seeded, fast.

Random weights detect nothing meaningful; these exist so the whole vision path (processors, one
detector pass, batched box prompts, post-processing, crops) runs in tests and benches without weights."""

from __future__ import annotations

import string
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

COMMON_WORDS: tuple[str, ...] = (
    "a",
    "an",
    "the",
    "and",
    "with",
    "of",
    "in",
    "on",
    "girl",
    "boy",
    "man",
    "woman",
    "child",
    "baby",
    "person",
    "dog",
    "cat",
    "bird",
    "horse",
    "cow",
    "sheep",
    "bear",
    "car",
    "bike",
    "boat",
    "tree",
    "house",
    "flower",
    "ball",
    "hat",
    "scarf",
    "bag",
    "dress",
    "shirt",
    "shoe",
    "glasses",
    "umbrella",
    "cup",
    "book",
    "chair",
    "table",
    "robot",
    "dragon",
    "fox",
    "rabbit",
)


def tiny_vocab() -> dict[str, int]:
    """A word-piece vocabulary in which any lowercase ASCII name tokenizes (letters as pieces), with a few
    common nouns as whole tokens."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits)
    pieces = [*specials, *string.punctuation, *chars, *(f"##{c}" for c in chars), *COMMON_WORDS]
    return {token: index for index, token in enumerate(dict.fromkeys(pieces))}


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_grounding_dino(seed: int = 0, mm: bool = False) -> tuple[Any, Any]:
    """(GroundingDinoForObjectDetection, GroundingDinoProcessor): Swin backbone + BERT text tower, ~0.1 s.
    With `mm=True` the model is MMGroundingDinoForObjectDetection (same processor and outputs)."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    vocab = tiny_vocab()
    config_class, model_class = (
        (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)
        if mm
        else (GroundingDinoConfig, GroundingDinoForObjectDetection)
    )
    config = config_class(
        backbone_config=SwinConfig(
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=4,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # 1 breaks the box-head weight tying
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=20,
        num_feature_levels=4,
    )
    with _seeded(seed):
        model = model_class(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 256, "longest_edge": 416}),
        tokenizer=BertTokenizer(vocab=vocab, do_lower_case=True),
    )
    return model, processor


def tiny_sam(seed: int = 0) -> tuple[Any, Any]:
    """(SamModel, SamProcessor) working at 256 pixels instead of 1024."""
    from transformers import (
        SamConfig,
        SamImageProcessorPil,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    size = 256
    config = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            output_channels=32,
            mlp_dim=64,
            global_attn_indexes=[0],
            num_pos_feats=16,  # must match the prompt encoder's hidden size / 2
            image_size=size,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=32, image_size=size, image_embedding_size=size // 16),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    with _seeded(seed):
        model = SamModel(config).eval()
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(size={"longest_edge": size}, pad_size={"height": size, "width": size})
    )
    return model, processor


def tiny_sam2(seed: int = 0) -> Any:
    """Sam2Model (Hiera backbone) at 256 pixels; SAM 2 needs no processor here (see vision.segmenter)."""
    from transformers import Sam2Config, Sam2Model
    from transformers.models.sam2.configuration_sam2 import (
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    size = 256
    backbone = Sam2HieraDetConfig(
        hidden_size=16,
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],  # a global block may not open a stage (query pooling needs a window)
        image_size=[size, size],
        window_positional_embedding_background_size=[4, 4],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
        fpn_hidden_size=32,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=size, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    with _seeded(seed):
        return Sam2Model(config).eval()


def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0-255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in printable)
    stand_ins = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(extra)}
    return [stand_ins[b] for b in range(256)]


def tiny_owlv2(seed: int = 0) -> tuple[Any, Any]:
    """(Owlv2ForObjectDetection, Owlv2Processor) with a byte-level CLIP tokenizer (no merges) and 64-pixel
    images: exercises the per-query detector path."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    alphabet = _byte_level_alphabet()
    tokens = [*alphabet, *(f"{c}</w>" for c in alphabet), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    max_length = 64
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)
    config = Owlv2Config(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": max_length,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    with _seeded(seed):
        model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessorPil(size={"height": 64, "width": 64}), tokenizer=tokenizer
    )
    return model, processor
