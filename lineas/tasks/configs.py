"""Typed settings of the tasks: plain dataclasses, used as they are from Python and as Hydra schemas by the
entry points (so a key that does not exist, or a value of the wrong type, is refused before any work)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from lineas.core.errors import ConfigError

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

    def check(self) -> Sampling:
        """Refuse, in one line, settings that ``generate`` cannot sample with; returns itself."""
        if not _whole(self.max_new_tokens, 1):
            raise ConfigError(f"sampling.max_new_tokens={self.max_new_tokens!r}: give a whole number, 1 or more")
        if not _whole(self.batch_size, 1):
            raise ConfigError(f"sampling.batch_size={self.batch_size!r}: give a whole number, 1 or more")
        if self.do_sample and not (_number(self.temperature) and self.temperature > 0):
            raise ConfigError(
                f"sampling.temperature={self.temperature!r}: give a positive temperature, or "
                "sampling.do_sample=false for greedy decoding"
            )
        if self.do_sample and not (_number(self.top_p) and 0 < self.top_p <= 1):
            raise ConfigError(f"sampling.top_p={self.top_p!r}: give a probability in (0, 1]")
        return self


def _whole(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_strengths(strengths: Sequence[float]) -> list[float]:
    """The strengths as floats; refuses an empty list and values that are not finite numbers."""
    if not strengths or not all(_number(s) for s in strengths):
        raise ConfigError(f"strengths={list(strengths)!r}: give one or more finite numbers, e.g. [0, 0.5, 1]")
    return [float(s) for s in strengths]


def check_count(name: str, value: Optional[int]) -> None:
    """Refuse a count of texts that is given but not a whole number of at least 1."""
    if value is not None and not _whole(value, 1):
        raise ConfigError(f"{name}={value!r}: give a whole number, 1 or more (null: all)")


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
    overwrite: bool = False  # replace an output_dir that lineas wrote
    dtype: Optional[str] = None  # transformers: default float32; bfloat16 / float16 halve the folder
    format: str = "transformers"  # or gguf: OUT/model.gguf for llama.cpp (Llama-family models)
    tensor_type: str = "f32"  # gguf: the type of the tensors the merge writes (f32, f16, q8_0)
    ungated: bool = False  # a gated maps folder: export its maps without the gate (a gate cannot be merged)


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
    overwrite: bool = False  # replace an output / image_grid file that lineas wrote
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
    overwrite: bool = False  # replace an output_dir that lineas wrote


@dataclass
class CompareConfig(EvalSettings):
    """``python -m lineas.compare``: the trade-off of several maps folders of one base model."""

    maps: list[str] = MISSING
    labels: Optional[list[str]] = None  # one per maps folder; default: estimator and support / clip
    model: Optional[str] = None
    strengths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])  # the base model once
    output_dir: str = MISSING
    overwrite: bool = False  # replace an output_dir that lineas wrote


@dataclass
class GateConfig:
    """``python -m lineas.gate``: fit a per-token gate for ``maps`` (post hoc DSAS), or measure the one it has."""

    maps: str = MISSING
    output_dir: Optional[str] = None  # the gated maps folder; default: the maps folder itself (gate added)
    source: str = "${lineas_data:toxicity/toxic.txt}"  # the maps' source prompts (split as their fit split them)
    control: str = "${lineas_data:neutral/control.txt}"  # neutral sentences of several kinds (72)
    text_field: str = "text"
    num_fit: int = 32  # per side; the rest is held out (the probe's accuracy is measured there)
    seed: int = 0  # the shuffle of both sides before the split (the maps' fit: its seed)
    components: int = 5  # principal directions per site
    l2: float = 1.0  # logistic regression penalty on the probe weights (scikit-learn C = 1 / l2)
    threshold: float = 0.75  # held-out balanced accuracy a site's probe needs to gate it
    weak_sites: str = "steer"  # sites below the threshold: steer (gate 1) or off (gate 0)
    pooling: str = "mean"  # per prompt (mean) or per token (token) samples for the probe
    fit: bool = True  # false: measure the gate the maps folder already holds
    measure: list[str] = field(default_factory=list)  # .txt files, or a generations.jsonl (its continuations)
    method: Optional[str] = None  # generations.jsonl of lineas.compare: the rows of this method only
    strength: float = 1.0  # the maps' strength while measuring (and the generations' rows to measure)
    dtype: str = "float32"
    max_length: int = 64


@dataclass
class DemoConfig:
    """``python -m lineas.demo``: a local page with one strength slider per maps folder (or a model alone)."""

    maps: Optional[Any] = None  # a maps folder, or a list of folders fitted on one base model
    model: Optional[str] = None  # with maps: replaces their base model; alone: this model as it is
    strength: float = 1.0  # every slider's starting value
    prompt: str = ""  # the prompt box's starting text
    export_dir: str = "demo_export"  # the export box's starting folder
    host: str = "127.0.0.1"  # another address serves the page beyond this machine (a warning says so)
    port: Optional[int] = None  # None: Gradio's (7860, or the next free port)
    sampling: Sampling = field(default_factory=lambda: Sampling(max_new_tokens=48))
    seed: int = 0  # images: the initial noise
    pipeline: PipelineCall = field(default_factory=PipelineCall)
    dtype: str = "float32"
    device: Optional[str] = None  # default: cuda if available, else cpu
    threads: Optional[int] = None  # torch.set_num_threads


@dataclass
class TrainerSettings:
    """The Lightning ``Trainer`` of a fit: these arguments typed; any other (``+trainer.NAME=VALUE``) as given."""

    _target_: str = "lightning.Trainer"
    max_steps: int = 1000  # optimizer steps; -1: no limit (then max_epochs decides)
    max_epochs: Optional[int] = -1
    accelerator: str = "auto"
    devices: Any = 1  # a count, a list of indices or "auto"
    num_nodes: int = 1
    strategy: Any = "auto"  # a name (ddp, fsdp, ...) or a {_target_: ...} strategy
    precision: Any = "32-true"
    use_distributed_sampler: bool = False
    check_val_every_n_epoch: Optional[int] = None
    val_check_interval: Any = 100  # steps (whole number) or a fraction of an epoch
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 1
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    enable_checkpointing: Optional[bool] = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    default_root_dir: Optional[str] = None


@dataclass
class TrainConfig:
    """``python -m lineas.train``: the nodes a fit is built from (``_target_`` + arguments each), typed at the top."""

    seed: int = 0
    output_dir: Optional[str] = None
    resume: Optional[str] = None  # a Lightning checkpoint of this run to continue
    overwrite: bool = False  # replace an output_dir that a lineas run wrote
    backbone: Any = MISSING
    data: Any = MISSING
    module: Any = MISSING
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    callbacks: dict[str, Any] = field(default_factory=dict)
