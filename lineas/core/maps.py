"""Per-site affine maps ``omega * z + beta`` with a strength slider; save/load as safetensors + JSON."""

from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lineas.core.errors import MapsFileError
from lineas.core.files import MAPS_CONFIG as CONFIG
from lineas.core.files import MAPS_WEIGHTS as WEIGHTS
from lineas.core.files import atomic_dir
from lineas.core.gate import Gate, has_gate
from lineas.core.hooks import attach, channel_dim
from lineas.core.sites import Site

FORMAT = "lineas-maps/1"
RESERVED = {"format", "strength", "sites", "support", "support_fraction", "versions", "clipped"}


def check_strength(lam: float) -> float:
    """``lam`` as a float; a warning when it is outside [0, 1] (the maps then extrapolate)."""
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        warnings.warn(f"strength {lam} is outside [0, 1]: the maps extrapolate", stacklevel=3)
    return lam


class AffineMaps(nn.Module):
    """Float32 ``omega, beta`` of shape ``(D,)`` per site, initialised at identity.

    At strength ``lam`` a site output ``z`` becomes ``(1 + lam*(omega-1)) * z + lam*beta``:
    ``lam=0`` is the base model, ``lam=1`` the fitted map.

    A site may carry *bounds* ``lo, hi`` (Linear-AcT's support clip,
    docs/method.md#baselines-linear-act-and-mean-shift): the map then changes a value only where
    ``lo < z < hi`` and passes every other value unchanged. On a 4-D feature map the rule is decided on each
    channel's spatial mean ``m``, and ``T(m) - m`` is added to every pixel. A clipped map is piecewise, so it
    works live (:meth:`apply`) but does not fold into weights.

    A :class:`~lineas.core.gate.Gate` in ``gate`` scales the strength per token: ``z + lam*g(z)*(T(z) - z)``,
    ``g`` computed on the site's output before its map. It depends on the input: gated maps are live only too.
    """

    def __init__(
        self,
        sites: Sequence[Site | str],
        dims: Sequence[int],
        strength: float = 1.0,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(sites) != len(dims):
            raise ValueError(f"{len(sites)} sites but {len(dims)} dims")
        self.sites = [Site.parse(s) for s in sites]
        self.omega = nn.ParameterList([nn.Parameter(torch.ones(d)) for d in dims])
        self.beta = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in dims])
        self.bounds: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(dims)
        self.strength = strength
        self.gate: Gate | None = None
        reserved = set(info or {}) & RESERVED
        if reserved:
            raise ValueError(f"info keys {sorted(reserved)} are reserved for the maps file itself")
        self.info: dict[str, Any] = dict(info or {})

    @property
    def dims(self) -> list[int]:
        return [w.numel() for w in self.omega]

    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, lam: float) -> None:
        self._strength = check_strength(lam)

    @property
    def clipped(self) -> bool:
        """Whether any site's map is clipped to bounds (live only, not mergeable)."""
        return any(b is not None for b in self.bounds)

    @property
    def gated(self) -> bool:
        """Whether a per-token gate scales the strength (live only, not mergeable)."""
        return self.gate is not None

    def clip_(self, i: int, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Restrict site ``i``'s map to values strictly inside ``(lo, hi)`` (each of shape ``(D,)``)."""
        d = self.dims[i]
        if lo.shape != (d,) or hi.shape != (d,):
            raise ValueError(
                f"site {self.sites[i]}: bounds of shapes {tuple(lo.shape)}, {tuple(hi.shape)}, expected ({d},)"
            )
        self.bounds[i] = (lo.detach().float().cpu().contiguous(), hi.detach().float().cpu().contiguous())

    def coefficients(self, i: int, strength: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w, b)`` of site ``i`` at ``strength`` (the maps' own by default)."""
        lam = self._strength if strength is None else strength
        return 1 + lam * (self.omega[i] - 1), lam * self.beta[i]

    def transform(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """Site ``i``'s output ``t`` mapped along its channel axis, in float32 whatever ``t``'s dtype (the
        caller casts it back): the loss then sees the map's exact output, and a bfloat16 base pays one cast."""
        shape = [1] * t.ndim
        shape[channel_dim(t)] = -1
        if t.shape[channel_dim(t)] != self.omega[i].numel():
            raise MapsFileError(
                f"site {self.sites[i]}: the maps have {self.omega[i].numel()} dims but the module "
                f"outputs {t.shape[channel_dim(t)]}; were the maps fitted on another model?"
            )
        w, b = (c.to(t.device).view(shape) for c in self.coefficients(i))
        g = self.gate.value(i, t, channel_dim(t)) if self.gate is not None else None
        if self.bounds[i] is None and g is None:
            return torch.addcmul(b, t, w)  # one fused kernel; promotes a low-precision t to float32
        z = t.float()
        if self.bounds[i] is None:
            return z + g * torch.addcmul(b, z, w - 1)
        lo, hi = (c.to(t.device).view(shape) for c in self.bounds[i])
        if t.ndim == 4:
            m = z.mean((2, 3), keepdim=True)
            step = torch.where((lo < m) & (m < hi), (w - 1) * m + b, 0.0)
            return z + step if g is None else z + g * step
        inside = (lo < z) & (z < hi)
        if g is None:
            return torch.where(inside, z * w + b, z)
        return z + g * torch.where(inside, z * (w - 1) + b, 0.0)

    @contextmanager
    def at_strength(self, strength: float | None) -> Iterator[AffineMaps]:
        """Use ``strength`` inside the block (None: leave it as is)."""
        saved = self._strength
        if strength is not None:
            self.strength = strength
        try:
            yield self
        finally:
            self._strength = saved

    @contextmanager
    def apply(self, model: nn.Module, strength: float | None = None) -> Iterator[nn.Module]:
        """Steer ``model`` inside the block (at ``strength`` if given)."""
        with self.at_strength(strength), attach(model, self.sites, self):
            yield model

    def support(self, eps: float = 1e-5) -> dict[str, int]:
        """Dimensions with ``|omega-1| > eps`` or ``|beta| > eps``, per site and ``"total"``."""
        with torch.no_grad():
            counts = {
                str(s): int(((w - 1).abs().gt(eps) | b.abs().gt(eps)).sum())
                for s, w, b in zip(self.sites, self.omega, self.beta)
            }
        counts["total"] = sum(counts.values())
        return counts

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for s, w, b in zip(self.sites, self.omega, self.beta):
            out[f"{s}.omega"] = w.detach().float().cpu().contiguous()
            out[f"{s}.beta"] = b.detach().float().cpu().contiguous()
        for s, bounds in zip(self.sites, self.bounds):
            if bounds is not None:
                out[f"{s}.lo"], out[f"{s}.hi"] = bounds
        return out

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write ``path/maps.safetensors`` and ``path/lineas.json`` (atomically)."""
        support = self.support(self.info.get("sparsity", {}).get("eps", 1e-5))
        meta = {
            "format": FORMAT,
            **self.info,
            "strength": self._strength,
            "clipped": self.clipped,
            "sites": [{"site": str(s), "dim": d} for s, d in zip(self.sites, self.dims)],
            "support": support,
            "support_fraction": support["total"] / max(1, sum(self.dims)),
            "versions": _versions(),
        }
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_file(self.state_tensors(), tmp / WEIGHTS)
            (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
            if self.gate is not None:
                self.gate.save_into(tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, gate: bool = True) -> AffineMaps:
        """Read a maps folder written by :meth:`save`, with its gate if it holds one (and ``gate``)."""
        path = Path(path)
        for name in (CONFIG, WEIGHTS):
            if not (path / name).is_file():
                raise MapsFileError(f"{path}: no {name}; a maps folder holds {CONFIG} and {WEIGHTS}")
        try:
            meta = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MapsFileError(f"{path / CONFIG}: not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise MapsFileError(f"{path / CONFIG}: a JSON object is expected, not {type(meta).__name__}")
        if meta.get("format") != FORMAT:
            raise MapsFileError(f"{path / CONFIG}: format {meta.get('format')!r}, expected {FORMAT!r}")
        try:
            tensors = load_file(path / WEIGHTS)
        except Exception as err:  # safetensors raises its own error types for truncated / foreign files
            raise MapsFileError(f"{path / WEIGHTS}: not a readable safetensors file ({err})") from None
        sites, dims, strength = _read_sites(meta, path / CONFIG)
        unknown = sorted({k.rpartition(".")[0] for k in tensors} - set(sites))
        if unknown:
            raise MapsFileError(
                f"{path / WEIGHTS}: holds tensors of sites {unknown[:3]} that {CONFIG} does not list; "
                "the two files are not of one maps folder"
            )
        info = {k: v for k, v in meta.items() if k not in RESERVED}
        maps = cls(sites, dims, strength=strength, info=info)
        with torch.no_grad():
            for s, d, w, b in zip(sites, dims, maps.omega, maps.beta):
                for name, param in (("omega", w), ("beta", b)):
                    t = tensors.get(f"{s}.{name}")
                    if t is None or t.shape != (d,):
                        got = "missing" if t is None else tuple(t.shape)
                        raise MapsFileError(f"{path / WEIGHTS}: {s}.{name} is {got}, expected ({d},)")
                    if not torch.isfinite(t).all():
                        raise MapsFileError(f"{path / WEIGHTS}: {s}.{name} holds non-finite values; refit the maps")
                    param.copy_(t)
        for i, s in enumerate(sites):
            lo, hi = tensors.get(f"{s}.lo"), tensors.get(f"{s}.hi")
            if (lo is None) != (hi is None):
                raise MapsFileError(f"{path / WEIGHTS}: site {s} has only one of {s}.lo / {s}.hi")
            if lo is not None:
                try:
                    maps.clip_(i, lo, hi)
                except ValueError as err:
                    raise MapsFileError(f"{path / WEIGHTS}: {err}") from None
        if gate and has_gate(path):
            maps.gate = Gate.load(path, maps.sites, dims)
        return maps


def _read_sites(meta: dict[str, Any], where: Path) -> tuple[list[str], list[int], float]:
    """The sites, dims and strength a ``lineas.json`` lists; one clear error for anything malformed."""
    entries = meta.get("sites")
    if not isinstance(entries, list) or not entries:
        raise MapsFileError(f"{where}: 'sites' must be a non-empty list of {{site, dim}} entries")
    sites, dims = [], []
    for n, e in enumerate(entries):
        ok = isinstance(e, dict) and isinstance(e.get("site"), str) and e["site"]
        if not ok or isinstance(e.get("dim"), bool) or not isinstance(e.get("dim"), int) or e["dim"] < 1:
            raise MapsFileError(f"{where}: sites[{n}] = {e!r}: each entry needs a site name and a whole dim >= 1")
        sites.append(str(Site.parse(e["site"])))
        dims.append(e["dim"])
    twice = sorted({s for s in sites if sites.count(s) > 1})
    if twice:
        raise MapsFileError(f"{where}: site {twice[0]} is listed twice; each site has one map")
    strength = meta.get("strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise MapsFileError(f"{where}: strength {strength!r} is not a finite number")
    return sites, dims, float(strength)


def load_maps(path: str | Path, gate: bool = True) -> AffineMaps:
    """Read a maps folder (``maps.safetensors`` + ``lineas.json``; ``gate.*`` too unless ``gate=False``)."""
    return AffineMaps.load(path, gate)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lineas", "torch", "transformers", "diffusers", "lightning"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
