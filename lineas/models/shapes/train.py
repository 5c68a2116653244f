"""Train the shapes-world Stable Diffusion pipeline from scratch, seeded, on one CPU thread, resumably.

``python -m lineas.models.shapes.train --work /tmp/shapes/run --out lineas/data/shapes_sd``

1. The VAE (:func:`~lineas.models.shapes.pipeline.build_vae`) learns to reconstruct fresh renders
   (L1 + a small KL term); its latent scaling factor is then set to 1 / (std of the latents).
2. The UNet and the CLIP text encoder learn together to denoise the VAE latents of fresh renders given
   their captions (v-prediction, cosine schedule, min-SNR-5 loss weights, 10% of captions dropped to ""
   for classifier-free guidance, AdamW with warm-up and cosine decay, an EMA of the weights).
3. The EMA weights are assembled into a ``StableDiffusionPipeline`` and saved with ``save_pretrained``, with
   ``lineas_pipeline.json`` (call settings) and ``training.json`` (settings, steps, times).

Every batch is a function of (seed, stage, step) alone, and the work folder keeps a checkpoint every
``--save-every`` steps (written atomically): a killed run resumes where it stopped and ends with the
weights of an uninterrupted one. A finished run extended to more steps (``--unet-steps N --replan-at M``,
M the steps it had) re-plans the cosine decay over N from step M on; the same two flags on a fresh run
reproduce it. Each further extension adds its start to the list (``--replan-at 3200,7000``). The defaults
are the committed run: 3200 denoiser steps planned, extended to 7000.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from lineas.core.files import PIPELINE_SETTINGS, atomic_dir, write_bytes, write_json
from lineas.models.shapes import pipeline as sp
from lineas.models.shapes.world import sample_scenes

STAGES = {"vae": 1, "unet": 2}


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
    save_every: int = 100
    log_every: int = 25


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
    state = _load(ckpt_path) or {"step": 0, "cpu_s": 0.0, "wall_s": 0.0}
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


def train_denoiser(cfg: TrainConfig, work: Path, vae: Any) -> tuple[Any, Any, dict[str, float]]:
    """Stage 2 (resumable): UNet + text encoder on the VAE latents; returns their EMA weights."""
    tokenizer = sp.shapes_tokenizer()
    torch.manual_seed(cfg.seed + 1)
    unet, text_encoder = sp.build_unet(), sp.build_text_encoder(len(tokenizer))
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema_unet, ema_text = sp.build_unet(), sp.build_text_encoder(len(tokenizer))
    ema_unet.load_state_dict(unet.state_dict())
    ema_text.load_state_dict(text_encoder.state_dict())
    ema = [*ema_unet.parameters(), *ema_text.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=cfg.weight_decay)
    sched = sp.train_scheduler()
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight = snr.clamp(max=cfg.min_snr_gamma) / (snr + 1)  # min-SNR-gamma for v-prediction
    ckpt_path = work / "unet.pt"
    state = _load(ckpt_path) or {"step": 0, "cpu_s": 0.0, "wall_s": 0.0}
    if "unet" in state:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        _log(f"unet: resumed at step {state['step']}")
    scale = vae.config.scaling_factor
    running, t0, c0 = [], time.perf_counter(), time.process_time()
    for step in _steps(state["step"], cfg.unet_steps, cfg.log_every, "unet"):
        rng, gen = batch_rng(cfg, "unet", step)
        scenes = sample_scenes(cfg.unet_batch, rng)
        captions = [
            c if keep else "" for c, keep in zip(scenes.captions, rng.random(len(scenes)) >= cfg.caption_dropout)
        ]
        ids = tokenizer(captions, padding="max_length", max_length=sp.MAX_TOKENS, return_tensors="pt").input_ids
        with torch.no_grad():
            latents = vae.encode(scenes.render() * 2 - 1).latent_dist.sample(generator=gen) * scale
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(latents),), generator=gen)
        noisy = sched.add_noise(latents, noise, t)
        target = sched.get_velocity(latents, noise, t)
        for group in opt.param_groups:
            group["lr"] = unet_lr_at(cfg, step)
        pred = unet(noisy, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = (weight[t] * (pred - target).pow(2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - decay)
        running.append(loss.item())
        if (step + 1) % cfg.log_every == 0:
            _log(f"unet step {step + 1}: loss {np.mean(running):.4f}")
            running = []
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.unet_steps:
            weights = {"unet": unet, "text": text_encoder, "ema_unet": ema_unet, "ema_text": ema_text, "opt": opt}
            _checkpoint(ckpt_path, state, step + 1, (t0, c0), **{k: v.state_dict() for k, v in weights.items()})
            t0, c0 = time.perf_counter(), time.process_time()
    return ema_unet.eval(), ema_text.eval(), {"cpu_s": state["cpu_s"], "wall_s": state["wall_s"]}


def train(cfg: TrainConfig, work: str | Path, out: str | Path | None = None) -> Any:
    """Both stages, then (if ``out``) the pipeline folder; returns the trained ``StableDiffusionPipeline``."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    vae, vae_record = train_vae(cfg, work)
    unet, text_encoder, unet_record = train_denoiser(cfg, work, vae)
    pipe = sp.assemble(vae, text_encoder, unet)
    if out is not None:
        record = {
            "config": asdict(cfg),
            "model": asdict(sp.ShapesSDConfig()),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "vae": vae_record,
            "denoiser": unet_record,
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


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="folder of the resumable checkpoints")
    parser.add_argument("--out", default=None, help="where to write the trained pipeline folder")
    parser.add_argument("--threads", type=int, default=1)
    for name, default in asdict(TrainConfig()).items():
        kind = _int_list if isinstance(default, tuple) else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    args = vars(parser.parse_args(argv))
    torch.set_num_threads(args.pop("threads"))
    work, out = args.pop("work"), args.pop("out")
    _log(f"training the shapes-world pipeline: {' '.join(sys.argv[1:])}")
    train(TrainConfig(**args), work, out)


if __name__ == "__main__":
    main()
