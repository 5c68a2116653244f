"""Train the shapes-world Stable Diffusion pipeline from scratch, seeded, on one CPU thread, resumably.

``python -m experiments.shapes_world.train_pipeline --work /tmp/shapes/run --out lineas/data/shapes_sd``

1. The VAE (:func:`~experiments.shapes_world.pipeline.build_vae`) learns to reconstruct fresh renders
   (L1 + a small KL term); its latent scaling factor is then set to 1 / (std of the latents).
2. The UNet and the CLIP text encoder learn together to denoise the VAE latents of fresh renders given
   their captions (v-prediction, cosine schedule, min-SNR-5 loss weights, 10% of captions dropped to ""
   for classifier-free guidance, AdamW with warm-up and cosine decay, an EMA of the weights).
3. Fine-tuning, in phases (``finetune_steps``, ``finetune_lr``): the same model, optimiser state and all, at a
   lower learning rate on scenes with two objects three times in four, where binding colours to shapes is
   learned last.
4. The EMA weights are assembled into a ``StableDiffusionPipeline`` and saved with ``save_pretrained``, with
   ``lineas_pipeline.json`` (call settings) and ``training.json`` (settings, steps, times).

Every batch is a function of (seed, stage, step) alone, and the work folder keeps a checkpoint every
``--save-every`` steps (written atomically): a killed run resumes where it stopped and ends with the
weights of an uninterrupted one. A finished run extended to more steps (``--unet-steps N --replan-at M``,
M the steps it had) re-plans the cosine decay over N from step M on; the same two flags on a fresh run
reproduce it. Each further extension adds its start to the list (``--replan-at 3200,7000``); once fine-tuning
has started, extend in a new work folder holding ``vae.pt`` and ``unet.pt`` only. The defaults
are the committed run: 3200 denoiser steps planned, extended to 7000, then fine-tuned 2000 + 4000 steps.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from experiments.shapes_world import pipeline as sp
from experiments.shapes_world.world import Layout, sample_scenes
from lineas.core.errors import ConfigError, LineasError
from lineas.core.files import PIPELINE_SETTINGS, atomic_dir, write_bytes, write_json

STAGES = {"vae": 1, "unet": 2}
FINETUNE_STREAM = 100_000


@dataclass
class TrainConfig:
    """Training settings (the defaults trained the committed weights)."""

    seed: int = 0
    vae_steps: int = 800
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    scale_samples: int = 1024  # renders that set the latent scaling factor
    unet_steps: int = 7000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup: int = 200
    final_lr_fraction: float = 0.1
    # an extended run: the steps before each of these follow a cosine planned over that many steps
    replan_at: tuple[int, ...] = (3200,)
    weight_decay: float = 1e-2
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    # stage 3: phases of (steps, peak learning rate), on scenes with two objects this often
    finetune_steps: tuple[int, ...] = (2000, 4000)
    finetune_lr: tuple[float, ...] = (3e-4, 2e-4)
    finetune_p_two: float = 0.75
    save_every: int = 100
    log_every: int = 25

    def __post_init__(self) -> None:
        if len(self.finetune_steps) != len(self.finetune_lr):
            raise ConfigError(
                f"finetune_steps {self.finetune_steps} and finetune_lr {self.finetune_lr} differ in length: "
                "give one learning rate per fine-tune phase"
            )


def batch_rng(cfg: TrainConfig, stage: str, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The numpy and torch generators of one batch: a function of (seed, stage, step) only."""
    rng = np.random.default_rng([cfg.seed, STAGES[stage], step])
    return rng, torch.Generator().manual_seed(int(rng.integers(2**62)))


def lr_at(step: int, total: int, base: float, warmup: int, final: float) -> float:
    """Linear warm-up, then cosine decay from ``base`` to ``final * base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def unet_lr_at(cfg: TrainConfig, step: int) -> float:
    """The denoiser's learning rate at ``step``: the cosine planned over the first ``replan_at`` entry above
    ``step`` (the length the run had when it was extended), else over ``unet_steps``."""
    planned = min([r for r in cfg.replan_at if step < r], default=cfg.unet_steps)
    return lr_at(step, planned, cfg.unet_lr, cfg.warmup, cfg.final_lr_fraction)


def _save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())


def _load(path: Path) -> dict[str, Any] | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _state(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, or a fresh one: step 0, no time spent."""
    return _load(path) or {"step": 0, "cpu_s": 0.0, "wall_s": 0.0}


def _checkpoint(path: Path, state: dict[str, Any], step: int, clocks: tuple[float, float], **weights: Any) -> None:
    """Save ``state`` at ``step`` with ``weights`` (state dicts), adding the time since ``clocks``."""
    t0, c0 = clocks
    state.update(
        step=step,
        cpu_s=state["cpu_s"] + time.process_time() - c0,
        wall_s=state["wall_s"] + time.perf_counter() - t0,
        **weights,
    )
    _save(path, state)


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _steps(start: int, total: int, log_every: int, name: str) -> Iterator[int]:
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(start, total):
        yield step
        done = step + 1 - start
        if (step + 1) % log_every == 0:
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            _log(f"{name} step {step + 1}/{total}: {wall / done:.3f} s/step wall, {cpu / done:.3f} s/step cpu")


def train_vae(cfg: TrainConfig, work: Path) -> tuple[Any, dict[str, float]]:
    """Stage 1 (resumable): the VAE on renders; returns it with its latent scaling factor set."""
    torch.manual_seed(cfg.seed)
    vae = sp.build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    ckpt_path = work / "vae.pt"
    state = _state(ckpt_path)
    if "model" in state:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        _log(f"vae: resumed at step {state['step']}")
    running, t0, c0 = [], time.perf_counter(), time.process_time()
    for step in _steps(state["step"], cfg.vae_steps, cfg.log_every, "vae"):
        rng, gen = batch_rng(cfg, "vae", step)
        x = sample_scenes(cfg.vae_batch, rng).render() * 2 - 1
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.vae_steps, cfg.vae_lr, 50, cfg.final_lr_fraction)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        l1 = (rec - x).abs().mean()
        loss = l1 + cfg.vae_kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(l1.item())
        if (step + 1) % cfg.log_every == 0:
            _log(f"vae step {step + 1}: L1 {np.mean(running):.4f}")
            running = []
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.vae_steps:
            _checkpoint(ckpt_path, state, step + 1, (t0, c0), model=vae.state_dict(), opt=opt.state_dict())
            t0, c0 = time.perf_counter(), time.process_time()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x = sample_scenes(cfg.scale_samples, np.random.default_rng([cfg.seed, 99])).render() * 2 - 1
        post = vae.encode(x).latent_dist
        scale = float(1.0 / post.sample(generator=torch.Generator().manual_seed(cfg.seed)).std())
        rec_l1 = float((vae.decode(post.mean).sample - x).abs().mean())
    vae.register_to_config(scaling_factor=scale)
    _log(f"vae: scaling factor {scale:.4f}, held-out reconstruction L1 {rec_l1:.4f}")
    return vae, {"scaling_factor": scale, "heldout_l1": rec_l1, "cpu_s": state["cpu_s"], "wall_s": state["wall_s"]}


class _Denoiser:
    """The UNet and text encoder in training: their EMA copies, the optimiser and the loss of one batch."""

    def __init__(self, cfg: TrainConfig, vae: Any) -> None:
        self.cfg, self.vae, self.tokenizer = cfg, vae, sp.shapes_tokenizer()
        torch.manual_seed(cfg.seed + 1)
        self.unet, self.text = sp.build_unet(), sp.build_text_encoder(len(self.tokenizer))
        self.ema_unet, self.ema_text = sp.build_unet(), sp.build_text_encoder(len(self.tokenizer))
        self.ema_unet.load_state_dict(self.unet.state_dict())
        self.ema_text.load_state_dict(self.text.state_dict())
        self.params = [*self.unet.parameters(), *self.text.parameters()]
        self.ema = [*self.ema_unet.parameters(), *self.ema_text.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.unet_lr, weight_decay=cfg.weight_decay)
        self.sched = sp.train_scheduler()
        snr = self.sched.alphas_cumprod / (1 - self.sched.alphas_cumprod)
        self.weight = snr.clamp(max=cfg.min_snr_gamma) / (snr + 1)  # min-SNR-gamma for v-prediction

    def parts(self) -> dict[str, Any]:
        return {"unet": self.unet, "text": self.text, "ema_unet": self.ema_unet, "ema_text": self.ema_text}

    def state(self) -> dict[str, Any]:
        return {**{k: v.state_dict() for k, v in self.parts().items()}, "opt": self.opt.state_dict()}

    def resume(self, state: dict[str, Any], stage: str) -> None:
        """Load the weights and optimiser of ``state``, if it holds any (a fresh state does not)."""
        if "unet" in state:
            for name, part in self.parts().items():
                part.load_state_dict(state[name])
            self.opt.load_state_dict(state["opt"])
            _log(f"{stage}: resumed at step {state['step']}")

    def step(self, batch: int, layout: Layout, lr: float, ema_decay: float) -> float:
        """One update on the batch drawn at ``batch`` of the denoiser's stream; returns the loss."""
        cfg, sched = self.cfg, self.sched
        rng, gen = batch_rng(cfg, "unet", batch)
        scenes = sample_scenes(cfg.unet_batch, rng, layout)
        captions = [
            c if keep else "" for c, keep in zip(scenes.captions, rng.random(len(scenes)) >= cfg.caption_dropout)
        ]
        ids = self.tokenizer(captions, padding="max_length", max_length=sp.MAX_TOKENS, return_tensors="pt")
        with torch.no_grad():
            latents = self.vae.encode(scenes.render() * 2 - 1).latent_dist.sample(generator=gen)
        latents = latents * self.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(latents),), generator=gen)
        for group in self.opt.param_groups:
            group["lr"] = lr
        pred = self.unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=self.text(ids.input_ids)[0])
        target = sched.get_velocity(latents, noise, t)
        loss = (self.weight[t] * (pred.sample - target).pow(2).mean((1, 2, 3))).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1 - ema_decay)
        return loss.item()


def _run(
    cfg: TrainConfig,
    path: Path,
    model: _Denoiser,
    state: dict[str, Any],
    total: int,
    name: str,
    update: Callable[[int], float],
) -> None:
    """Steps ``state["step"]`` to ``total`` of ``update(step) -> loss``, logged, checkpointed to ``path``."""
    running, t0, c0 = [], time.perf_counter(), time.process_time()
    for step in _steps(state["step"], total, cfg.log_every, name):
        running.append(update(step))
        if (step + 1) % cfg.log_every == 0:
            _log(f"{name} step {step + 1}: loss {np.mean(running):.4f}")
            running = []
        if (step + 1) % cfg.save_every == 0 or step + 1 == total:
            _checkpoint(path, state, step + 1, (t0, c0), **model.state())
            t0, c0 = time.perf_counter(), time.process_time()


def train_denoiser(cfg: TrainConfig, work: Path, vae: Any) -> tuple[_Denoiser, dict[str, float]]:
    """Stage 2 (resumable): UNet + text encoder on the VAE latents of :class:`Layout` scenes."""
    model = _Denoiser(cfg, vae)
    state = _state(work / "unet.pt")
    if state["step"] < cfg.unet_steps and (work / "finetune.pt").is_file():
        raise ConfigError(
            f"{work}: fine-tuning started from denoiser step {state['step']}, so a denoiser extended to "
            f"{cfg.unet_steps} steps would be replaced by it; extend in a new --work folder (copy vae.pt and unet.pt)"
        )
    model.resume(state, "unet")

    def update(step: int) -> float:
        return model.step(step, Layout(), unet_lr_at(cfg, step), min(cfg.ema_decay, (1 + step) / (10 + step)))

    _run(cfg, work / "unet.pt", model, state, cfg.unet_steps, "unet", update)
    return model, {"cpu_s": state["cpu_s"], "wall_s": state["wall_s"]}


def finetune_plan(cfg: TrainConfig, step: int) -> tuple[int, float]:
    """Fine-tune step ``step`` -> (its batch's index in the denoiser stream, its learning rate). Phase ``k``
    (``finetune_steps[k]`` steps) is a cosine from ``finetune_lr[k]`` to ``final_lr_fraction`` of it, without
    warm-up; its step ``i`` draws batch ``FINETUNE_STREAM * (k + 1) + i``, far past any from-scratch step."""
    ends = np.cumsum(cfg.finetune_steps)
    k = int(np.searchsorted(ends, step, side="right"))
    i = step - int(ends[k] - cfg.finetune_steps[k])
    lr = lr_at(i, cfg.finetune_steps[k], cfg.finetune_lr[k], 0, cfg.final_lr_fraction)
    return FINETUNE_STREAM * (k + 1) + i, lr


def finetune(cfg: TrainConfig, work: Path, model: _Denoiser) -> dict[str, float]:
    """Stage 3 (resumable): the trained denoiser, optimiser state and all, on scenes with two objects
    ``finetune_p_two`` of the time (binding colours to shapes is what pairs get wrong), EMA decay fixed."""
    state = _state(work / "finetune.pt")
    model.resume(state, "finetune")
    layout = Layout(p_two=cfg.finetune_p_two)

    def update(step: int) -> float:
        batch, lr = finetune_plan(cfg, step)
        return model.step(batch, layout, lr, cfg.ema_decay)

    _run(cfg, work / "finetune.pt", model, state, sum(cfg.finetune_steps), "finetune", update)
    return {"cpu_s": state["cpu_s"], "wall_s": state["wall_s"]}


def train(cfg: TrainConfig, work: str | Path, out: str | Path | None = None) -> Any:
    """Both stages, then (if ``out``) the pipeline folder; returns the trained ``StableDiffusionPipeline``."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    vae, vae_record = train_vae(cfg, work)
    model, unet_record = train_denoiser(cfg, work, vae)
    finetune_record = finetune(cfg, work, model)
    pipe = sp.assemble(vae, model.ema_text.eval(), model.ema_unet.eval())
    if out is not None:
        record = {
            "config": asdict(cfg),
            "model": asdict(sp.ShapesSDConfig()),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "vae": vae_record,
            "denoiser": unet_record,
            "finetune": finetune_record,
            "parameters": {
                name: sum(p.numel() for p in getattr(pipe, name).parameters())
                for name in ("vae", "unet", "text_encoder")
            },
        }
        with atomic_dir(out) as tmp:
            pipe.save_pretrained(tmp)
            write_json(tmp / PIPELINE_SETTINGS, sp.CALL_SETTINGS)
            write_json(tmp / "training.json", record)
        _log(f"pipeline written to {out}")
    return pipe


def _list_of(kind: type) -> Any:
    """An argparse type: comma-separated values of ``kind`` -> a tuple."""
    return lambda text: tuple(kind(x) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="folder of the resumable checkpoints")
    parser.add_argument("--out", default=None, help="where to write the trained pipeline folder")
    parser.add_argument("--threads", type=int, default=1)
    for name, default in asdict(TrainConfig()).items():
        kind = _list_of(type(default[0])) if isinstance(default, tuple) else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    args = vars(parser.parse_args(argv))
    torch.set_num_threads(args.pop("threads"))
    work, out = args.pop("work"), args.pop("out")
    _log(f"training the shapes-world pipeline: {' '.join(sys.argv[1:])}")
    try:
        train(TrainConfig(**args), work, out)
    except LineasError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
