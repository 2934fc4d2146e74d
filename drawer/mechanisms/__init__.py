"""The consistency mechanisms a turn can combine (docs/mechanisms.md), and the registry the drawer builds one
attention stack and one callback chain from.

Each mechanism lives in its own module and contributes to a render through `install(pipe, batch, stack)`:
cross-attention keywords (the per-turn contexts the UNet's processors read) and step listeners. The processors
themselves are installed once per pipeline (drawer.parallel_attention); a mechanism that is off passes no
context, so its branch of every processor is never taken. Order matters only for listeners and is fixed here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drawer.mechanisms import global_reference, regional, shared_attention
from drawer.msdiffusion.install import install as msdiffusion_install
from drawer.stepping import StepListener
from studio.draw import Mechanism

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from drawer.render import RenderBatch


@dataclass
class AttentionStack:
    """What a render hands the pipeline: `cross_attention_kwargs` and the step listeners of the callback chain."""

    kwargs: dict[str, object] = field(default_factory=dict)
    listeners: list[StepListener] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)


Installer = Callable[["DiffusionPipeline", "RenderBatch", AttentionStack], None]


def _install_reference_controls(pipe: DiffusionPipeline, batch: RenderBatch, stack: AttentionStack) -> None:
    """Per-subject reference controls and the style reference (drawer.reference_controls): after `layout`
    (it edits that context's image rows) and `global_reference` (it joins that branch)."""
    from drawer.reference_controls import install

    install(pipe, batch, stack)


ATTENTION_INSTALLERS: dict[str, Installer] = {
    "layout": regional.install,
    "shared_attention": shared_attention.install,
    "global_reference": global_reference.install,
    "reference_controls": _install_reference_controls,
    "msdiffusion": msdiffusion_install,
}
"""The per-render installers in stack order. `layout` serves both Parallel-UNet mechanisms (`regional`: text
rows, `subject_reference`: image rows), which share one regional context; `subject_init` installs nothing in
attention (it is a pre-render and a latent hook, drawer.subject_init)."""

OWNERS: dict[str, tuple[Mechanism, ...]] = {
    "layout": ("regional", "subject_reference"),
    "shared_attention": ("shared_attention",),
    "global_reference": ("global_reference",),
    "msdiffusion": ("subject_reference",),  # on an MS-Diffusion preset, subject references use its image branch
}


def build_stack(pipe: DiffusionPipeline, batch: RenderBatch) -> AttentionStack:
    """One attention stack per render from the batch's mechanisms (always the `layout` context, which is plain
    text attention when neither Parallel-UNet mechanism is on)."""
    stack = AttentionStack()
    for install in ATTENTION_INSTALLERS.values():
        install(pipe, batch, stack)
    return stack
