"""Typed settings of the tasks: plain dataclasses, used as they are from Python and as Hydra schemas by the
entry points (so a key that does not exist, or a value of the wrong type, is refused before any work)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

MISSING = "???"  # omegaconf's marker of a required value


@dataclass
class Sampling:
    """How continuations are sampled; the same at every strength (``seed`` is reset before each)."""

    max_new_tokens: int = 32
    do_sample: bool = True
    temperature: float = 0.7  # with do_sample only
    top_p: float = 0.9  # with do_sample only
    seed: Optional[int] = 0  # None: no seeding
    batch_size: int = 16
    chat_template: bool = False  # wrap each prompt as a user message of the tokenizer's chat template


@dataclass
class PipelineCall:
    """Call settings of a diffusers pipeline; None: the folder's ``lineas_pipeline.json``, else the pipeline's."""

    height: Optional[int] = None
    width: Optional[int] = None
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    max_sequence_length: Optional[int] = None  # FLUX only


@dataclass
class ExportConfig:
    """``python -m lineas.export``: fold ``maps`` at ``strength`` into their base model (or ``model``)."""

    maps: str = MISSING
    output_dir: str = MISSING
    strength: float = 1.0
    model: Optional[str] = None  # default: the base model recorded in the maps
    overwrite: bool = False
    dtype: Optional[str] = None  # transformers: default float32; bfloat16 / float16 halve the folder
    format: str = "transformers"  # or gguf: OUT/model.gguf for llama.cpp (Llama-family models)
    tensor_type: str = "f32"  # gguf: the type of the tensors the merge writes (f32, f16, q8_0)


@dataclass
class ComposeConfig:
    """``python -m lineas.compose``: ``maps[0]`` at ``strengths[0]``, then ``maps[1]`` ..., as one maps folder."""

    maps: list[str] = MISSING
    strengths: Optional[list[float]] = None  # one per maps folder; default: 1 each
    output_dir: str = MISSING
    overwrite: bool = False


@dataclass
class GenerateConfig:
    """``python -m lineas.generate``: continuations (or images) at each strength, side by side."""

    maps: Optional[str] = None  # a maps folder
    model: Optional[str] = None  # with maps: replaces their base model; alone: this model as it is
    prompts: str = MISSING  # .txt (one per line), .jsonl or .csv (field text_field)
    text_field: str = "text"
    strengths: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    sampling: Sampling = field(default_factory=Sampling)
    dtype: str = "float32"
    device: Optional[str] = None  # default: cuda if available, else cpu
    threads: Optional[int] = None  # torch.set_num_threads
    progress: bool = True
    output: Optional[str] = "generations.jsonl"  # one row per prompt x strength; None: no file
    tb_dir: Optional[str] = None  # a TensorBoard log dir: the table as text (tag 'generations')
    image_grid: str = "grid.png"  # text-to-image: rows prompt x seed, columns strengths
    seeds: list[int] = field(default_factory=lambda: [0])
    pipeline: PipelineCall = field(default_factory=PipelineCall)


@dataclass
class EvalSettings:
    """What the concept score and perplexity are measured on, with which scorer, and how continuations are sampled."""

    prompts: str = "${lineas_data:toxicity/prompts.txt}"  # toxic-leaning prompt beginnings (120)
    num_prompts: Optional[int] = None  # None: all
    perplexity_texts: str = "${lineas_data:neutral/wiki.txt}"  # neutral encyclopedic sentences (220)
    num_perplexity_texts: Optional[int] = None
    # the concept scorer(s), None: toxicity; a lineas.metrics.ConceptScore class path, {_target_: CLASS, ...}, or a
    # list of them (each one's columns and their joint success)
    scorer: Any = None
    threshold: Optional[float] = None  # None: the (first) scorer's own (toxicity 0.5, sentiment 0.05)
    sampling: Sampling = field(default_factory=Sampling)
    dtype: str = "float32"
    threads: Optional[int] = None
    progress: bool = True


@dataclass
class EvaluateConfig(EvalSettings):
    """``python -m lineas.evaluate``: toxicity and perplexity against strength, of maps or of a model."""

    maps: Optional[str] = None
    model: Optional[str] = None  # with maps: replaces their base model; alone: evaluate it as it is
    strengths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    output_dir: Optional[str] = None  # default: <maps>/../eval


@dataclass
class CompareConfig(EvalSettings):
    """``python -m lineas.compare``: the trade-off of several maps folders of one base model."""

    maps: list[str] = MISSING
    labels: Optional[list[str]] = None  # one per maps folder; default: estimator and support / clip
    model: Optional[str] = None
    strengths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])  # the base model once
    output_dir: str = MISSING
