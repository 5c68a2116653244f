"""The page of ``python -m lineas.demo``: a Gradio app over a model and one or more maps folders.

Text (a causal LM): a prompt box, one strength slider per maps folder (every folder's maps apply, in the
order given, each at its own strength: :mod:`lineas.tasks.stacked`), the sampling settings in a collapsed
panel, and the base and steered continuations side by side, streamed token by token from the same seed
(:mod:`lineas.tasks.streaming`); with gated maps, the steered text once more with each token shaded by its gate
(:func:`lineas.tasks.gate.token_gates`). Images (a diffusers pipeline): the base and steered images from one seed,
and a strip of the prompt with every folder at 0, 0.25, ..., 1. Export: the merged checkpoint (and the GGUF
file for Llama-family models) at the sliders' values, with the command lines that write the same.

A :class:`~lineas.core.errors.LineasError` shows as one line on the page (``gr.Error``) and in the terminal.
Endpoints for ``gradio_client``: ``/generate`` (prompt, one strength per folder, then the settings panel's
values in order) and ``/export`` (folder, overwrite, gguf, one strength per folder).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from lineas.core.errors import ConfigError, LineasError
from lineas.core.gate import Gate
from lineas.models.causal_lm import load_causal_lm
from lineas.models.diffusion import PipelineModules, load_pipeline
from lineas.models.families import model_type_of
from lineas.models.sources import resolve
from lineas.tasks.configs import DemoConfig, Sampling
from lineas.tasks.gate import token_gates
from lineas.tasks.images import grid, render_rows
from lineas.tasks.stacked import Stack, export_commands, export_stack, load_stack, stacked
from lineas.tasks.steered import load_steering
from lineas.tasks.streaming import stream, stream_pair

LOCALHOST = "127.0.0.1"
STRIP = (0.0, 0.25, 0.5, 0.75, 1.0)  # the images strip: every folder at each of these strengths
SHOWN_SIZE = 256  # small images are shown enlarged (nearest neighbour) to about this many pixels a side
GGUF_FAMILIES = {"llama"}  # what lineas.tasks.gguf writes


@dataclass
class Demo:
    """What the page runs: ``model`` (a causal LM with ``tokenizer``, or a diffusers pipeline whose networks
    ``modules`` carry the hooks) steered by ``stack`` (None: the model as it is, its column named ``label``)."""

    spec: str
    model: Any
    modules: nn.Module
    tokenizer: Any | None
    stack: Stack | None
    label: str = "steered"

    @property
    def images(self) -> bool:
        return self.tokenizer is None

    @property
    def gates(self) -> list[Gate]:
        """The gates of the gated folders (a language model's only)."""
        if self.images or self.stack is None:
            return []
        return [m.gate for m in self.stack.maps if m.gate is not None]

    @property
    def gguf(self) -> bool:
        """Whether the export can also write a GGUF file (Llama-family language models)."""
        return not self.images and model_type_of(self.model) in GGUF_FAMILIES


def folders_of(maps: str | Sequence[str] | None) -> list[str]:
    """``maps=`` as a list of folders (one folder, a list, or none)."""
    if maps is None:
        return []
    return [str(maps)] if isinstance(maps, (str, os.PathLike)) else [str(m) for m in maps]


def load_demo(cfg: DemoConfig) -> Demo:
    """Read the maps folders and load their base model (or ``cfg.model`` alone), checked before the page starts."""
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    folders = folders_of(cfg.maps)
    stack = load_stack(folders, cfg.model) if folders else None
    if stack is None:
        alone = load_steering(None, cfg.model)
        spec, images, label = alone.spec, alone.pipeline, alone.label
    else:
        spec, images, label = stack.spec, stack.pipeline, "steered"
    if images:
        model = load_pipeline(spec, cfg.dtype).to(device)
        modules, tokenizer = PipelineModules(model), None
    else:
        model, tokenizer = load_causal_lm(spec, cfg.dtype, device)
        modules = model
    if stack is not None:
        stack.check_against(modules)
        with stacked(modules, stack, [0.0] * len(stack.maps)):  # every site names a module of this model
            pass
    return Demo(spec, model, modules, tokenizer, stack, label)


def bind_warning(host: str) -> str | None:
    """The warning for serving on ``host`` (None on this machine's loopback address)."""
    if host == LOCALHOST:
        return None
    return (
        f"serving on {host}, not {LOCALHOST}: anyone who can reach this machine can use the page, "
        "and its export button writes to this machine's disk"
    )


def _shown_errors(fn: Callable) -> Callable:
    """``fn`` with a user error (:class:`LineasError`) turned into one line on the page and in the terminal."""
    import gradio as gr

    def shown(err: LineasError) -> Exception:
        print(f"lineas.demo: {err}", file=sys.stderr, flush=True)
        return gr.Error(str(err), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def each(*args: Any) -> Iterator[Any]:
            try:
                yield from fn(*args)
            except LineasError as err:
                raise shown(err) from None

        return each

    @functools.wraps(fn)
    def once(*args: Any) -> Any:
        try:
            return fn(*args)
        except LineasError as err:
            raise shown(err) from None

    return once


def _prompt(text: str) -> str:
    if not text or not text.strip():
        raise ConfigError("write a prompt first")
    return text


def text_stream(
    demo: Demo, prompt: str, strengths: Sequence[float], sampling: Sampling
) -> Iterator[tuple[str, str] | str]:
    """The page's text: ``(base, steered)`` as they grow, or the model's continuation alone (no maps)."""
    prompt = _prompt(prompt)
    if demo.stack is None:
        yield from stream(demo.model, demo.tokenizer, prompt, sampling)
        return
    yield from stream_pair(demo.model, demo.tokenizer, prompt, sampling, stacked(demo.model, demo.stack, strengths))


def gate_shading(demo: Demo, prompt: str, continuation: str, strengths: Sequence[float]) -> list[tuple[str, float]]:
    """The prompt and its steered continuation, token by token, each with its gate (averaged over the gated
    sites of every folder) as the steered model computes it at ``strengths``."""
    steer = stacked(demo.model, demo.stack, strengths)
    return token_gates(demo.model, demo.tokenizer, prompt + continuation, demo.gates, steer)


def _shown(images: np.ndarray) -> np.ndarray:
    """A uint8 picture from float images ``(columns, rows, H, W, 3)``, enlarged when small."""
    picture = grid(images, pad=0 if images.shape[0] * images.shape[1] == 1 else 2)
    k = max(1, SHOWN_SIZE // images.shape[2])
    return picture.repeat(k, axis=0).repeat(k, axis=1)


def image_set(demo: Demo, prompt: str, strengths: Sequence[float], seed: int, **call: Any) -> tuple[np.ndarray, ...]:
    """The page's images (uint8): base, steered at ``strengths``, and the strip with every folder at each of
    :data:`STRIP`; the model's image alone without maps. ``call``: the pipeline's call settings."""
    rows = [(_prompt(prompt), int(seed))]
    base = render_rows(demo.model, rows, **call)[0]
    if demo.stack is None:
        return (_shown(base[None]),)
    n = len(demo.stack.maps)
    with stacked(demo.modules, demo.stack, strengths):
        steered = render_rows(demo.model, rows, **call)[0]
    strip = [base]
    for lam in STRIP[1:]:
        with stacked(demo.modules, demo.stack, [lam] * n):
            strip.append(render_rows(demo.model, rows, **call)[0])
    return _shown(base[None]), _shown(steered[None]), _shown(np.stack(strip))


def export_report(demo: Demo, folder: str, overwrite: bool, gguf: bool, strengths: Sequence[float]) -> str:
    """Export at ``strengths`` into ``folder``; Markdown naming what was written and the equivalent commands."""
    if demo.stack is None:
        raise ConfigError("nothing to export: the page shows a model without maps")
    if not folder or not folder.strip():
        raise ConfigError("name the folder to export into")
    gguf = bool(gguf) and demo.gguf
    path = export_stack(demo.stack, strengths, folder.strip(), overwrite=bool(overwrite), gguf=gguf).resolve()
    parts = ["merged/ (a transformers folder)" if not demo.images else "merged/ (a diffusers pipeline folder)"]
    parts += ["gguf/model.gguf (llama.cpp)"] if gguf else []
    commands = "\n".join(export_commands(demo.stack, strengths, folder.strip(), bool(overwrite), gguf))
    return f"Wrote `{path}`: {', '.join(parts)}.\n\nThe same from a shell:\n```\n{commands}\n```"


def _call_settings(demo: Demo, cfg: DemoConfig) -> dict[str, Any]:
    """The pipeline's call settings: the folder's ``lineas_pipeline.json`` overridden by ``cfg.pipeline``."""
    given = {k: v for k, v in vars(cfg.pipeline).items() if v is not None}
    return {**resolve(demo.spec).pipeline_settings, **given}


def build_app(demo: Demo, cfg: DemoConfig) -> Any:
    """The Gradio Blocks of the page (not launched)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    folders = demo.stack.folders if demo.stack is not None else []
    kind = "images" if demo.images else "text"
    with gr.Blocks(title="lineas", analytics_enabled=False) as app:
        what = f"{len(folders)} maps folder{'s' * (len(folders) > 1)}" if folders else "no maps (the model as it is)"
        gr.Markdown(f"## lineas: {kind} from `{demo.spec}` with {what}")
        prompt = gr.Textbox(label="Prompt", value=cfg.prompt, lines=2, elem_id="prompt")
        sliders = [
            gr.Slider(0.0, 1.0, value=cfg.strength, step=0.05, label=f"strength of {f}", elem_id=f"strength-{i}")
            for i, f in enumerate(folders)
        ]
        with gr.Accordion("Sampling" if not demo.images else "Image settings", open=False):
            settings = _image_panel(gr, demo, cfg) if demo.images else _sampling_panel(gr, cfg.sampling)
        button = gr.Button("Generate", variant="primary", elem_id="generate")
        outputs = _image_outputs(gr, demo) if demo.images else _text_outputs(gr, demo)
        n = len(sliders)
        if demo.images:
            call = _call_settings(demo, cfg)

            def on_generate(text: str, *values: Any) -> tuple[np.ndarray, ...]:
                seed, steps, guidance = values[n:]
                extra = {"num_inference_steps": steps, "guidance_scale": guidance}
                merged = {**call, **{k: v for k, v in extra.items() if v is not None}}
                shown = image_set(demo, text, values[:n], int(seed or 0), **merged)
                return shown if len(shown) > 1 else shown[0]

        else:
            gated = bool(demo.gates)

            def on_generate(text: str, *values: Any) -> Iterator[Any]:
                tokens, do_sample, temperature, top_p, seed, chat = values[n:]
                sampling = replace(
                    cfg.sampling,
                    max_new_tokens=int(tokens),
                    do_sample=bool(do_sample),
                    temperature=float(temperature),
                    top_p=float(top_p),
                    seed=None if seed is None else int(seed),
                    chat_template=bool(chat),
                )
                shown: Any = None
                for shown in text_stream(demo, text, values[:n], sampling):
                    yield (*shown, None) if gated else shown
                if gated:
                    yield (*shown, gate_shading(demo, text, shown[1], values[:n]))

        button.click(_shown_errors(on_generate), [prompt, *sliders, *settings], outputs, api_name="generate")
        prompt.submit(_shown_errors(on_generate), [prompt, *sliders, *settings], outputs, api_name=False)
        if demo.stack is not None:
            _export_panel(gr, demo, cfg, sliders)
    return app


def _sampling_panel(gr: Any, sampling: Sampling) -> list[Any]:
    return [
        gr.Slider(1, 256, value=sampling.max_new_tokens, step=1, label="max new tokens"),
        gr.Checkbox(value=sampling.do_sample, label="sample (off: greedy)"),
        gr.Slider(0.05, 2.0, value=sampling.temperature, step=0.05, label="temperature"),
        gr.Slider(0.05, 1.0, value=sampling.top_p, step=0.01, label="top p"),
        gr.Number(value=sampling.seed, precision=0, label="seed (the same for both columns)"),
        gr.Checkbox(value=sampling.chat_template, label="wrap the prompt in the chat template"),
    ]


def _image_panel(gr: Any, demo: Demo, cfg: DemoConfig) -> list[Any]:
    call = _call_settings(demo, cfg)
    return [
        gr.Number(value=cfg.seed, precision=0, label="seed (the initial noise of every image)"),
        gr.Number(value=call.get("num_inference_steps"), precision=0, label="denoising steps"),
        gr.Number(value=call.get("guidance_scale"), label="guidance scale"),
    ]


def _text_outputs(gr: Any, demo: Demo) -> list[Any]:
    if demo.stack is None:
        return [gr.Textbox(label=demo.label, lines=8, elem_id="steered")]
    with gr.Row():
        shown = [
            gr.Textbox(label="base (strength 0)", lines=8, elem_id="base"),
            gr.Textbox(label="steered", lines=8, elem_id="steered"),
        ]
    if demo.gates:
        label = "steered text, each token shaded by its gate (0: not steered, 1: steered fully)"
        shown.append(gr.HighlightedText(label=label, show_legend=False, elem_id="gates"))
    return shown


def _image_outputs(gr: Any, demo: Demo) -> list[Any]:
    if demo.stack is None:
        return [gr.Image(label=demo.label, type="numpy", format="png", elem_id="steered")]
    with gr.Row():
        shown = [
            gr.Image(label="base (strength 0)", type="numpy", format="png", elem_id="base"),
            gr.Image(label="steered", type="numpy", format="png", elem_id="steered"),
        ]
    strip = gr.Image(
        label="every folder at " + ", ".join(f"{s:g}" for s in STRIP), type="numpy", format="png", elem_id="strip"
    )
    return [*shown, strip]


def _export_panel(gr: Any, demo: Demo, cfg: DemoConfig, sliders: list[Any]) -> None:
    with gr.Accordion("Export the merged model at these strengths", open=False):
        folder = gr.Textbox(label="into folder", value=cfg.export_dir, elem_id="export-dir")
        with gr.Row():
            overwrite = gr.Checkbox(value=False, label="replace the folder if it exists")
            gguf = gr.Checkbox(value=demo.gguf, interactive=demo.gguf, label="also a GGUF file (Llama family)")
        button = gr.Button("Export", elem_id="export")
        report = gr.Markdown(elem_id="export-report")

        def on_export(into: str, replace_it: bool, also_gguf: bool, *strengths: float) -> str:
            return export_report(demo, into, replace_it, also_gguf, strengths)

        button.click(_shown_errors(on_export), [folder, overwrite, gguf, *sliders], report, api_name="export")


def serve(app: Any, host: str = LOCALHOST, port: int | None = None, block: bool = True) -> str:
    """Start the page; returns its local URL (``block``: serve until interrupted)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request Gradio makes to itself
    app.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=False)
    return str(app.local_url)
