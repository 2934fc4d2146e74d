"""The per-step cost of each consistency mechanism relative to plain attention, side by side in one run.

The mid-size SD1.5-shaped CPU UNet of bench_parallel_unet.py (random weights, random IP-Adapter), one
classifier-free-guided UNet step with the drawer's processors:

- plain-1 / plain-3: the processors with the layout inactive (plain text attention), 1 and 3 images;
- grca-20: plain-1 plus Story-Adapter's global reference cross-attention over 20 frames (4 tokens each);
- shared-3: plain-3 plus ConsiStory's shared attention, images 0 and 1 anchors of image 2 (subject mask a
  quarter of the canvas, dropout 0.5, after the vanilla-blending steps), with the cross-attention map
  recording that runs every step;
- shared-3+inject: shared-3 on a step where DIFT feature injection blends (synthetic correspondence: every
  subject patch of image 2 matched in anchor 0); the injection's pre-pass (one more denoising run to ~74 % of
  the steps) is not part of a step and is not in this figure;
- anchor cache: the bytes one subject's cache holds per step (recorded on that step) and for a 30-step turn.

With `--before REV` the GRCA and shared-attention cases also run with the mechanism modules of git revision
REV (`drawer/mechanisms/{global_reference,shared_attention}.py` loaded from `git show`), interleaved with the
current ones in the same process: a before/after comparison on the same machine under the same load.

Timings are interleaved and reported as median and minimum with their ratios to the matching plain case.
`--clock cpu` times process CPU time (steadier than wall time on a shared machine; use with `--threads 1`).

Run:  .venv/bin/python bench/bench_mechanisms.py [--height 256 --width 256 --repeats 5 --threads 2]
      [--clock cpu] [--before ae68618]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch
from diffusers.models.attention_processor import Attention

from bench.bench_parallel_unet import CROSS, VAE_FACTOR, build_pipeline
from drawer.mechanisms import global_reference, shared_attention
from drawer.mechanisms.feature_injection import Correspondence, FeatureInjector, injection_grid
from drawer.parallel_attention import RegionalContext, install_parallel_attention, unet_grids
from studio.geometry import Box


def module_at(revision: str, path: str, name: str) -> ModuleType:
    """A module as it was at a git revision, imported under another name (for the before/after cases)."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], check=True, capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="bench-before-"))
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=30, help="turn length for the anchor-cache total")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--before", default=None, help="git revision whose mechanism modules run side by side")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    versions = {"": (global_reference, shared_attention)}
    if args.before:
        versions[" before"] = (
            module_at(args.before, "drawer/mechanisms/global_reference.py", "before_global_reference"),
            module_at(args.before, "drawer/mechanisms/shared_attention.py", "before_shared_attention"),
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    unet = build_pipeline().unet.eval()
    install_parallel_attention(unet)
    gen = torch.Generator().manual_seed(1)
    side = (args.height // VAE_FACTOR, args.width // VAE_FACTOR)
    grids = unet_grids(unet, args.height, args.width, VAE_FACTOR)
    t = torch.tensor(500)

    def inactive(images: int) -> RegionalContext:
        context = RegionalContext(torch.zeros(1, 77, CROSS), [], [], num_references=1)
        context.active = False
        return context

    def inputs(images: int, references: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        latents = torch.randn(2 * images, 4, *side, generator=gen)
        text = torch.randn(2 * images, 77, CROSS, generator=gen)
        embeds = [torch.randn(2 * images, references, 32, generator=gen)]
        return latents, text, embeds

    def step(images: int, references: int, **kwargs: object):
        latents, text, embeds = inputs(images, references)
        kwargs.setdefault("layout", inactive(images))

        def run() -> None:
            unet(
                latents,
                t,
                encoder_hidden_states=text,
                added_cond_kwargs={"image_embeds": embeds},
                cross_attention_kwargs=kwargs,
            )

        return run

    names = {id(m): n for n, m in unet.named_modules() if isinstance(m, Attention)}
    subject = Box(x=args.width / 4, y=args.height / 4, w=args.width / 2, h=args.height / 2)

    def shared_context(record: bool, module: ModuleType = shared_attention, inject: bool = False) -> object:
        setup = module.SharedSetup(
            subject_tokens=[{"1": [2]}] * 3,
            anchors=[0, 1],
            mask_dropout=0.5,
            vanilla_query_steps=0.1,
            record={"1": (0, subject, "")} if record else {},
        )
        context = module.SharedAttentionContext(
            setup, grids, names, size=(args.height, args.width), steps=args.steps, guided=True, seed=0
        )
        maps = torch.full((3, context.record_grid.tokens, 77), 0.01)
        inside = torch.zeros(context.record_grid.height, context.record_grid.width, dtype=torch.bool)
        h, w = context.record_grid.height, context.record_grid.width
        inside[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
        maps[:, inside.flatten(), 2] = 0.5
        context._step_maps, context._step_count = maps, 1
        step_index = args.steps // 6 if inject else args.steps // 2
        context.after_step(step_index - 1)
        if inject:
            grid = injection_grid(grids)
            mask = context.union_mask(2, grid)
            match = Correspondence(
                source=torch.tensor([[-1] * grid.tokens, [-1] * grid.tokens, [0] * grid.tokens]),
                index=torch.arange(grid.tokens).repeat(3, 1),
                distance=torch.zeros(3, grid.tokens),
                injected=torch.stack([torch.zeros_like(mask), torch.zeros_like(mask), mask]),
            )
            context.injection = FeatureInjector(match, grid, images=3, guided=True, steps=args.steps)
        return context

    cases: dict[str, object] = {"plain-1": step(1, 1)}
    base: dict[str, str] = {"plain-1": "plain-1"}
    for suffix, (grca_module, _) in versions.items():
        name = f"grca-{args.frames}{suffix}"
        grca = grca_module.GlobalReferenceContext(first=1, count=args.frames, scale=0.3)
        cases[name], base[name] = step(1, 1 + args.frames, global_reference=grca), "plain-1"
    cases["plain-3"], base["plain-3"] = step(3, 1), "plain-3"
    for suffix, (_, shared_module) in versions.items():
        name = f"shared-3{suffix}"
        context = shared_context(record=False, module=shared_module)
        cases[name], base[name] = step(3, 1, shared_attention=context), "plain-3"
    injecting = shared_context(record=False, inject=True)
    cases["shared-3+inject"], base["shared-3+inject"] = step(3, 1, shared_attention=injecting), "plain-3"
    timings: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for run in cases.values():
            run()  # type: ignore[operator]
        for _ in range(args.repeats):
            for name, run in cases.items():
                start = clock()
                run()  # type: ignore[operator]
                timings[name].append(clock() - start)
        assert injecting.injection.injected_at, "the injection case did not inject"  # type: ignore[attr-defined]
        recorder = shared_context(record=True)
        step(3, 1, shared_attention=recorder)()
    print(
        f"torch threads {torch.get_num_threads()}, canvas {args.width}x{args.height}, CFG, {args.repeats} repeats, "
        f"{args.clock} clock" + (f", before = {args.before}" if args.before else "")
    )
    print(f"{'case':<16} {'median s':>9} {'ratio':>7} {'min s':>8} {'ratio':>7}")
    for name, values in timings.items():
        ref = timings[base[name]]
        median, best = statistics.median(values), min(values)
        print(
            f"{name:<16} {median:>9.3f} {median / statistics.median(ref):>6.2f}x {best:>8.3f} {best / min(ref):>6.2f}x"
        )
    cache = recorder.recorded["1"]
    per_step = cache.nbytes
    print(
        f"anchor cache, one subject (box a quarter of the canvas, {unet.dtype}): {per_step / 2**20:.2f} MiB per step, "
        f"{per_step * args.steps / 2**20:.1f} MiB for {args.steps} steps ({len(cache.patches)} layers per step)"
    )


if __name__ == "__main__":
    main()
