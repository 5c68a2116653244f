"""LinEAS: end-to-end linear activation steering on PyTorch Lightning.

Notebook use, no Hydra needed::

    import lineas
    maps = lineas.fit("offline:smollm2-135m-instruct", "toxic.txt", "nontoxic.txt", sites="mlp_out")
    with maps.apply(model, strength=0.5):
        model.generate(...)
    maps.save("my_maps"); maps = lineas.load_maps("my_maps")
"""

__version__ = "0.1.0"

from lineas.backbones import CausalLM
from lineas.fit import fit
from lineas.hooks import attach
from lineas.loss import pool, sorted_w2
from lineas.maps import AffineMaps, MapsFileError, load_maps
from lineas.module import LinEASModule
from lineas.pipelines import DiffusionPipe
from lineas.sites import PRESETS, Site, SiteError, resolve_sites
from lineas.sparsity import Sparsity
from lineas.zoo import resolve_model

__all__ = [
    "AffineMaps", "CausalLM", "DiffusionPipe", "LinEASModule", "MapsFileError", "PRESETS", "Site", "SiteError", "Sparsity",
    "attach", "fit", "load_maps", "pool", "resolve_model", "resolve_sites", "sorted_w2",
]
