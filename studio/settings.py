"""Configuration: environment variables `STUDIO_*` (nested with `__`) and an optional TOML file
named by `STUDIO_CONFIG_FILE`."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

Dtype = Literal["float32", "float16", "bfloat16", "auto"]


class FastModeWeights(BaseModel):
    """The few-step weights of a preset's fast mode (docs/fast_mode.md): an LCM-LoRA or SDXL-Lightning LoRA
    (loaded as a PEFT adapter through diffusers' `load_lora_weights`, switched on only in fast draws), or a full
    few-step UNet (SDXL-Lightning's `_unet` file, an LCM UNet) swapped in for fast draws."""

    scheduler: Literal["lcm", "lightning"] = Field(
        default="lcm", description="lcm: LCMScheduler; lightning: Euler with trailing timesteps (SDXL-Lightning)"
    )
    lora: str | None = Field(
        default=None, description="hub id, folder or .safetensors file of the LoRA; 'tiny': random (tiny kinds)"
    )
    lora_weight: str | None = Field(default=None, description="file name inside the hub repo or folder")
    lora_scale: float = Field(default=1.0, gt=0.0, le=2.0)
    unet: str | None = Field(default=None, description="hub id or folder of a full few-step UNet (instead of a LoRA)")
    unet_weight: str | None = Field(default=None, description="a diffusers-layout UNet file inside `unet`")
    unet_subfolder: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FastModeWeights:
        if (self.lora is None) == (self.unet is None):
            raise ValueError("fast: give exactly one of `lora` or `unet`")
        return self


class ModelPreset(BaseModel):
    """How to load a drawer model. `kind` picks the architecture; `tiny` builds random weights."""

    kind: Literal["tiny", "tiny-sdxl", "sd15", "sdxl", "msdiffusion"]
    base: str | None = Field(default=None, description="hub id, local diffusers folder, or a .safetensors file")
    vae: str | None = Field(default=None, description="hub id or folder of a separate VAE")
    ip_adapter: str | None = Field(default=None, description="hub id or folder holding the IP-Adapter weights")
    ip_adapter_subfolder: str = "models"
    ip_adapter_weight: str | None = Field(default=None, description="e.g. ip-adapter-plus_sd15.safetensors")
    image_encoder: str | None = Field(default=None, description="hub id or folder of the CLIP image encoder")
    image_encoder_subfolder: str | None = None
    dtype: Dtype = "auto"
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', …")
    offload: bool = Field(default=False, description="model CPU offload (CUDA only)")
    max_side: int = Field(default=2048, description="largest canvas side this model accepts")
    ms_adapter: str | None = Field(
        default=None, description="kind msdiffusion: hub id, folder or file of the adapter (ms_adapter.bin)"
    )
    ms_adapter_weight: str = Field(
        default="ms_adapter.bin", description="the adapter's file name in `ms_adapter` (or a converted .safetensors)"
    )
    fast: FastModeWeights | None = Field(default=None, description="few-step weights; None: no fast mode")
    tiny_vae: str | None = Field(
        default=None, description="hub id or folder of the preview autoencoder (TAESD/TAESDXL); 'tiny': random"
    )
    prerender_max_side: int | None = Field(
        default=None,
        ge=64,
        description="subject init pre-renders on the turn's canvas scaled down (aspect kept) to at most this side; "
        "None: on the turn's canvas",
    )

    @model_validator(mode="after")
    def _tiny_only_for_tiny(self) -> ModelPreset:
        random_ok = self.kind in ("tiny", "tiny-sdxl")
        if not random_ok and (self.tiny_vae == "tiny" or (self.fast is not None and self.fast.lora == "tiny")):
            raise ValueError("'tiny' (random weights) is only for the tiny kinds")
        return self


def default_presets() -> dict[str, ModelPreset]:
    return {
        # the tiny presets accept the canvases of the real models they are shaped like (sd15, sdxl below)
        # (their pre-renders, whose pixels only the collage and the crops use, are drawn at 256 px: docs/drawer.md)
        "tiny": ModelPreset(
            kind="tiny",
            dtype="float32",
            device="cpu",
            max_side=1024,
            prerender_max_side=256,
            fast=FastModeWeights(lora="tiny"),
            tiny_vae="tiny",
        ),
        "tiny-sdxl": ModelPreset(
            kind="tiny-sdxl",
            dtype="float32",
            device="cpu",
            max_side=2048,
            prerender_max_side=256,
            fast=FastModeWeights(lora="tiny", scheduler="lightning"),
            tiny_vae="tiny",
        ),
        "sd15": ModelPreset(
            kind="sd15",
            base="stable-diffusion-v1-5/stable-diffusion-v1-5",
            vae="stabilityai/sd-vae-ft-mse",
            ip_adapter="h94/IP-Adapter",
            ip_adapter_subfolder="models",
            ip_adapter_weight="ip-adapter-plus_sd15.safetensors",
            image_encoder="h94/IP-Adapter",
            image_encoder_subfolder="models/image_encoder",
            max_side=1024,
            fast=FastModeWeights(
                lora="latent-consistency/lcm-lora-sdv1-5", lora_weight="pytorch_lora_weights.safetensors"
            ),
            tiny_vae="madebyollin/taesd",
        ),
        "sdxl": ModelPreset(
            kind="sdxl",
            base="stabilityai/stable-diffusion-xl-base-1.0",
            vae="madebyollin/sdxl-vae-fp16-fix",
            ip_adapter="h94/IP-Adapter",
            ip_adapter_subfolder="sdxl_models",
            ip_adapter_weight="ip-adapter-plus_sdxl_vit-h.safetensors",
            image_encoder="h94/IP-Adapter",
            image_encoder_subfolder="models/image_encoder",
            max_side=2048,
            fast=FastModeWeights(
                scheduler="lightning",
                lora="ByteDance/SDXL-Lightning",
                lora_weight="sdxl_lightning_4step_lora.safetensors",
            ),
            tiny_vae="madebyollin/taesdxl",
        ),
        "msdiffusion": ModelPreset(
            kind="msdiffusion",
            base="stabilityai/stable-diffusion-xl-base-1.0",
            vae="madebyollin/sdxl-vae-fp16-fix",
            ms_adapter="doge1516/MS-Diffusion",
            ms_adapter_weight="ms_adapter.bin",
            image_encoder="h94/IP-Adapter",  # OpenCLIP ViT-bigG-14's vision tower (1664 wide), diffusers layout
            image_encoder_subfolder="sdxl_models/image_encoder",
            max_side=2048,
        ),
    }


class VisionSettings(BaseModel):
    detector: str = Field(
        default="tiny", description="'tiny' or a hub id / folder, e.g. IDEA-Research/grounding-dino-base"
    )
    segmenter: str = Field(default="tiny", description="'tiny' or a hub id / folder, e.g. facebook/sam-vit-base")
    box_threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    text_threshold: float = Field(default=0.25, ge=0.0, le=1.0)
    min_iou: float = Field(
        default=0.1, ge=0.0, le=1.0, description="a detection must overlap its subject's planned box at least this much"
    )
    device: str = "auto"
    dtype: Dtype = "auto"
    refresh: Literal["first", "better"] = Field(
        default="first", description="keep a subject's first reference, or replace it by a better-scored crop"
    )


class LLMSettings(BaseModel):
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint; None: offline planner")
    api_key: str = "not-needed"
    model: str = "gpt-4o-mini"
    subject_manager_model: str | None = None
    layout_generator_model: str | None = None
    supervisor_model: str | None = None
    timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="per request; a timed-out request is not re-sent (see docs/agents.md)"
    )
    max_retries: int = Field(
        default=3, ge=0, le=10, description="re-sends after 408/409/429/5xx or a refused connection, never a timeout"
    )
    max_revisions: int = Field(default=3, ge=0, le=20)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=16, le=65536, description="reply budget of every request")
    subject_manager_max_tokens: int | None = Field(default=None, ge=16, le=65536)
    layout_generator_max_tokens: int | None = Field(default=None, ge=16, le=65536)
    supervisor_max_tokens: int | None = Field(default=512, ge=16, le=65536)
    max_tokens_cap: int = Field(
        default=2048,
        ge=16,
        le=65536,
        description="a reply cut at its budget is asked once more with the budget doubled up to this cap",
    )
    fallback_to_offline: bool = Field(
        default=True, description="when the LLM agents cannot plan a turn, draw the offline planner's plan"
    )

    @field_validator("base_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


class AuthSettings(BaseModel):
    enabled: bool = Field(default=True, description="off is allowed only when the server binds to loopback")


def default_data_dir() -> Path:
    """The per-user data folder (e.g. ~/.local/share/autostudio on Linux, honouring XDG_DATA_HOME): where
    `studio keys create` and `studio serve` meet whatever folder they are run from."""
    return Path(platformdirs.user_data_dir("autostudio", appauthor=False))


class ScaleOutSettings(BaseModel):
    """Several API processes on one PostgreSQL database (docs/operations.md): turn leases and how processes
    find work and each other's events. The defaults suit one process too."""

    lease_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="a dead process's turn is taken over this long after its last renewal"
    )
    poll_seconds: float = Field(
        default=2.0, gt=0, le=600, description="how often a process looks for claimable turns and renews its leases"
    )
    event_poll_seconds: float = Field(
        default=2.0, gt=0, le=600, description="an event stream re-reads the database at least this often"
    )


class DrawerBackendSettings(BaseModel):
    """Where turns are drawn: in this process (embedded, the default) or by `studio worker` processes that
    take jobs from a Celery queue per preset on a Redis broker (see docs/scaleout.md)."""

    backend: Literal["embedded", "celery"] = "embedded"
    broker_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis: Celery broker, progress, results")
    prefix: str = Field(default="studio", description="namespace of the queues and Redis keys (one per deployment)")
    result_timeout_s: float = Field(default=3600.0, gt=0, description="a job not finished by then fails its turn")
    connect_timeout_s: float = Field(default=2.0, gt=0, description="Redis reachability check before a turn is stored")
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="deliveries of a job (worker crashes, errors) before its turn fails"
    )
    visibility_timeout_s: float = Field(
        default=3600.0, gt=0, description="a job unacknowledged this long (its worker died) is delivered again"
    )
    result_ttl_s: int = Field(default=86400, ge=60, description="how long a finished job's result stays in Redis")
    heartbeat_s: float = Field(default=5.0, gt=0, description="a worker's heartbeat; its job lease lasts 3 beats")
    factory: str | None = Field(
        default=None, description="'module:function' returning a Drawer for a preset name instead of the models"
    )


DEFAULT_MAX_SUBJECTS = 8  # subjects one turn may place: the setting's default, and the drawer's and agents'


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDIO_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="database, images and keys; default: the per-user data folder, the same from any working folder",
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    host: str = "127.0.0.1"
    port: int = 8000
    default_preset: str = "tiny"
    presets: dict[str, ModelPreset] = Field(default_factory=default_presets)
    vision: VisionSettings = Field(default_factory=VisionSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    drawer: DrawerBackendSettings = Field(default_factory=DrawerBackendSettings)
    max_canvas_side: int = 2048
    max_subjects: int = Field(default=DEFAULT_MAX_SUBJECTS, ge=1)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096
    max_queued_turns: int = Field(default=16, ge=1, description="unfinished turns per session before 429")
    worker_threads: int = Field(default=1, ge=1, description="turns drawn at once (sessions stay ordered)")
    scaleout: ScaleOutSettings = Field(default_factory=ScaleOutSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("STUDIO_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'studio.db').resolve()}"

    def preset(self, name: str | None = None) -> ModelPreset:
        key = name or self.default_preset
        if key not in self.presets:
            raise KeyError(f"unknown model preset {key!r}; known: {sorted(self.presets)}")
        return self.presets[key]


@lru_cache
def get_settings() -> Settings:
    return Settings()
