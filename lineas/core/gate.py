"""Adaptive per-token strength (DSAS): a gate per site that says how much of the map each token gets.

Per site, ``g(z) = sigmoid(a . ((z - mu) P^T / s) + c)``: ``P`` (``k x D``) holds the top-k principal
directions of the pooled fit activations (source and control together), ``mu`` their mean, ``s`` the standard
deviation of each projection, and ``a, c`` a logistic probe of source (1) against control (0). Applied to every
token of the site's (unsteered) output ``z``: ``z + lam * g(z) * (T(z) - z)``. A site whose probe does not
separate held-out prompts is not gated: its ``state`` says whether it is steered as without a gate
(``"steer"``: gate 1) or not at all (``"off"``: gate 0).

Saved beside the maps as ``gate.safetensors`` (``SITE.mean``, ``.components``, ``.scale``, ``.weight``,
``.bias`` of the gated sites) and ``gate.json`` (states, held-out accuracies, how it was fitted).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lineas.core.errors import ConfigError, MapsFileError
from lineas.core.files import GATE_CONFIG, GATE_WEIGHTS
from lineas.core.probe import balanced_accuracy, fit_probe
from lineas.core.sites import Site

FORMAT = "lineas-gate/1"
STATES = ("gated", "steer", "off")
TENSORS = ("mean", "components", "scale", "weight", "bias")
THRESHOLD = 0.75  # held-out balanced accuracy a probe needs for its site to be gated (the DSAS summaries' value)


class Gate(nn.Module):
    """Per-site probes (see the module docstring); ``weight`` and ``bias`` are trainable (end-to-end fit)."""

    def __init__(self, sites: Sequence[Site | str], dims: Sequence[int], k: int = 5, info: dict | None = None) -> None:
        super().__init__()
        self.sites = [Site.parse(s) for s in sites]
        self.states = ["steer"] * len(self.sites)
        self.accuracy: list[float | None] = [None] * len(self.sites)
        self.mean = nn.ParameterList([nn.Parameter(torch.zeros(d), requires_grad=False) for d in dims])
        self.components = nn.ParameterList([nn.Parameter(torch.zeros(k, d), requires_grad=False) for d in dims])
        self.scale = nn.ParameterList([nn.Parameter(torch.ones(k), requires_grad=False) for _ in dims])
        self.weight = nn.ParameterList([nn.Parameter(torch.zeros(k)) for _ in dims])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(1)) for _ in dims])
        self.info: dict[str, Any] = dict(info or {})
        self._record: dict[int, list[torch.Tensor]] | None = None

    @property
    def k(self) -> int:
        return self.scale[0].numel() if len(self.scale) else 0

    def set_probe(
        self,
        i: int,
        mean: torch.Tensor,
        components: torch.Tensor,
        scale: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
    ) -> None:
        """Site ``i`` gated by the given probe (values copied in float32)."""
        with torch.no_grad():
            for param, value in zip(
                (self.mean[i], self.components[i], self.scale[i], self.weight[i], self.bias[i]),
                (mean, components, scale, weight, bias.reshape(1)),
            ):
                if value.shape != param.shape:
                    raise ValueError(
                        f"site {self.sites[i]}: probe tensor of shape {tuple(value.shape)}, "
                        f"expected {tuple(param.shape)}"
                    )
                param.copy_(value.float())
        self.states[i] = "gated"

    def logits(self, i: int, z: torch.Tensor, channel: int = -1) -> torch.Tensor:
        """Probe logit of every position of ``z`` (float32), keeping ``channel`` as an axis of size 1."""
        direction = self.components[i].T @ (self.weight[i] / self.scale[i])  # (D,): 2D+2 FLOPs a token
        offset = self.bias[i] - self.mean[i] @ direction
        z = z.float().movedim(channel, -1)
        return (z @ direction.to(z.device) + offset.to(z.device)).unsqueeze(-1).movedim(-1, channel)

    def value(self, i: int, z: torch.Tensor, channel: int = -1) -> torch.Tensor | None:
        """Gate of every position of ``z`` in [0, 1] (None: gate 1, the site is steered as without a gate)."""
        state = self.states[i]
        if state == "gated":
            g = torch.sigmoid(self.logits(i, z, channel))
        else:
            shape = list(z.shape)
            shape[channel] = 1
            g = z.new_full(shape, float(state == "steer"), dtype=torch.float32)
        if self._record is not None:
            self._record.setdefault(i, []).append(g.detach())
        return None if state == "steer" else g

    @contextmanager
    def recording(self) -> Iterator[dict[int, list[torch.Tensor]]]:
        """Inside the block, every gate value computed (per site index, in firing order) lands in the dict."""
        self._record = {}
        try:
            yield self._record
        finally:
            self._record = None

    def fit_(
        self,
        source: Sequence[torch.Tensor],
        control: Sequence[torch.Tensor],
        source_heldout: Sequence[torch.Tensor],
        control_heldout: Sequence[torch.Tensor],
        l2: float = 1.0,
        threshold: float = THRESHOLD,
        weak: str = "steer",
    ) -> Gate:
        """Fit every site's probe (:func:`lineas.core.probe.fit_probe`) on per-site samples ``(N, D)`` of source
        and control; a site whose held-out balanced accuracy is below ``threshold`` gets the state ``weak``:
        ``"steer"`` (gate 1, steered as without a gate) or ``"off"`` (gate 0, not steered). Returns the gate."""
        if weak not in ("steer", "off"):
            raise ConfigError(f"weak_sites={weak!r}: choose steer (gate 1) or off (gate 0)")
        if min(len(t) for t in (*source_heldout, *control_heldout)) < 2:
            raise ConfigError("the gate's held-out check needs at least 2 source and 2 control prompts")
        if len(source[0]) + len(control[0]) < self.k:
            raise ConfigError(f"a gate of {self.k} components needs at least {self.k} fit prompts")
        self.info.update(l2=l2, threshold=threshold, weak_sites=weak)
        for i in range(len(self.sites)):
            probe, accuracy = fit_probe(source[i], control[i], source_heldout[i], control_heldout[i], self.k, l2)
            self.accuracy[i] = accuracy
            if accuracy >= threshold:
                self.set_probe(i, *probe)
            else:
                self.states[i] = weak
        return self

    @torch.no_grad()
    def heldout_accuracy(self, i: int, source: torch.Tensor, control: torch.Tensor) -> float:
        """Balanced accuracy of site ``i``'s probe as it stands on samples ``(N, D)`` of source and control."""
        logits = self.logits(i, torch.cat([source, control]).to(self.weight[i].device)).squeeze(-1)
        return balanced_accuracy(logits.cpu(), torch.cat([torch.ones(len(source)), torch.zeros(len(control))]))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, s in enumerate(self.sites):
            if self.states[i] == "gated":
                for name in TENSORS:
                    out[f"{s}.{name}"] = getattr(self, name)[i].detach().float().cpu().contiguous()
        return out

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **self.info,
            "components": self.k,
            "sites": [
                {"site": str(s), "state": st, "heldout_accuracy": acc}
                for s, st, acc in zip(self.sites, self.states, self.accuracy)
            ],
        }

    def save_into(self, folder: Path) -> None:
        """Write ``gate.safetensors`` and ``gate.json`` into ``folder`` (a maps folder being written)."""
        save_file(self.state_tensors(), folder / GATE_WEIGHTS)
        (folder / GATE_CONFIG).write_text(json.dumps(self.meta(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, sites: Sequence[Site], dims: Sequence[int]) -> Gate:
        """Read the gate of a maps folder whose maps have ``sites`` of ``dims``."""
        folder = Path(folder)
        for name in (GATE_CONFIG, GATE_WEIGHTS):
            if not (folder / name).is_file():
                raise MapsFileError(f"{folder}: a gate needs {GATE_CONFIG} and {GATE_WEIGHTS}; {name} is missing")
        try:
            meta = json.loads((folder / GATE_CONFIG).read_text())
        except json.JSONDecodeError as err:
            raise MapsFileError(f"{folder / GATE_CONFIG}: not valid JSON ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else None
            raise MapsFileError(f"{folder / GATE_CONFIG}: format {got!r}, expected {FORMAT!r}")
        entries = meta.get("sites")
        names = [str(s) for s in sites]
        if not isinstance(entries, list) or [e.get("site") for e in entries if isinstance(e, dict)] != names:
            raise MapsFileError(f"{folder / GATE_CONFIG}: its sites are not the maps' sites {names}; refit the gate")
        bad = [e["site"] for e in entries if e.get("state") not in STATES]
        if bad:
            raise MapsFileError(f"{folder / GATE_CONFIG}: sites {bad} have no state among {list(STATES)}")
        try:
            tensors = load_file(folder / GATE_WEIGHTS)
        except Exception as err:  # safetensors raises its own error types for truncated / foreign files
            raise MapsFileError(f"{folder / GATE_WEIGHTS}: not a readable safetensors file ({err})") from None
        k = int(meta.get("components", 0))
        info = {key: v for key, v in meta.items() if key not in ("format", "components", "sites")}
        gate = cls(sites, dims, k, info)
        for i, (s, e) in enumerate(zip(names, entries)):
            gate.states[i], gate.accuracy[i] = e["state"], e.get("heldout_accuracy")
            if e["state"] != "gated":
                continue
            probe = [tensors.get(f"{s}.{name}") for name in TENSORS]
            missing = [name for name, t in zip(TENSORS, probe) if t is None]
            if missing:
                raise MapsFileError(f"{folder / GATE_WEIGHTS}: gated site {s} lacks {missing}")
            if not all(torch.isfinite(t).all() for t in probe):
                raise MapsFileError(f"{folder / GATE_WEIGHTS}: site {s} holds non-finite values; refit the gate")
            try:
                gate.set_probe(i, *probe)
            except ValueError as err:
                raise MapsFileError(f"{folder / GATE_WEIGHTS}: {err}") from None
        return gate


def fit_gate(
    sites: Sequence[Site | str],
    source: Sequence[torch.Tensor],
    control: Sequence[torch.Tensor],
    source_heldout: Sequence[torch.Tensor],
    control_heldout: Sequence[torch.Tensor],
    k: int = 5,
    l2: float = 1.0,
    threshold: float = THRESHOLD,
    weak: str = "steer",
    info: dict[str, Any] | None = None,
) -> Gate:
    """A gate with one probe per site from per-site samples ``(N, D)`` (see :meth:`Gate.fit_`); ``k`` is capped
    by the number of fit samples and the dimensions."""
    dims = [t.shape[1] for t in source]
    k = min(k, len(source[0]) + len(control[0]), *dims)
    gate = Gate(sites, dims, k, info)
    return gate.fit_(source, control, source_heldout, control_heldout, l2, threshold, weak)


def has_gate(folder: str | Path) -> bool:
    """Whether a maps folder holds a gate (either of its two files)."""
    return any((Path(folder) / name).exists() for name in (GATE_CONFIG, GATE_WEIGHTS))
