"""Composition of maps: several maps, each at its own strength, applied one after the other, as one map.

At a site that several maps steer, ``T_b(T_a(z))`` with ``T_a(z) = w_a*z + b_a`` and ``T_b(z) = w_b*z + b_b``
(each at its strength) is the affine map ``(w_b*w_a)*z + (w_b*b_a + b_b)``: exact, and as mergeable as its
parts. A site that one map steers keeps that map. A clipped map (Linear-AcT's support clip) is piecewise:
the window of the second map would apply to the output of the first, which is no clipped affine map of the
same kind, so clipped maps are refused.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lineas.core.errors import ConfigError, MapsFileError
from lineas.core.maps import AffineMaps, check_strength
from lineas.core.sites import Site


def compose_maps(
    parts: Sequence[AffineMaps], strengths: Sequence[float], info: dict[str, Any] | None = None
) -> AffineMaps:
    """One map, at strength 1, equal to ``parts[0]`` at ``strengths[0]``, then ``parts[1]`` at ``strengths[1]``,
    and so on. Sites keep the order in which the parts first name them."""
    if not parts:
        raise ConfigError("compose needs at least one maps folder")
    if len(strengths) != len(parts):
        raise ConfigError(f"{len(parts)} maps but {len(strengths)} strengths: give one strength per maps folder")
    coefficients: dict[Site, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, (part, lam) in enumerate(zip(parts, strengths)):
        if part.clipped:
            raise MapsFileError(
                f"maps {k + 1} of {len(parts)} are clipped (Linear-AcT's support clip): a clipped map is piecewise "
                "and does not compose into one map; compose unclipped maps (module.clip=false)"
            )
        lam = check_strength(lam)
        with torch.no_grad():
            for i, site in enumerate(part.sites):
                w, b = (c.detach().float().cpu() for c in part.coefficients(i, lam))
                if site not in coefficients:
                    coefficients[site] = (w, b)
                    continue
                w0, b0 = coefficients[site]
                if w0.shape != w.shape:
                    raise MapsFileError(
                        f"site {site}: maps 1..{k} have {w0.numel()} dims there, maps {k + 1} have {w.numel()}; "
                        "were they fitted on different models?"
                    )
                coefficients[site] = (w * w0, w * b0 + b)
    sites = list(coefficients)
    out = AffineMaps(sites, [coefficients[s][0].numel() for s in sites], strength=1.0, info=info)
    with torch.no_grad():
        for i, s in enumerate(sites):
            out.omega[i].copy_(coefficients[s][0])
            out.beta[i].copy_(coefficients[s][1])
    return out
