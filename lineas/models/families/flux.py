"""FLUX (diffusers ``FluxPipeline``): the double- and single-stream transformer blocks, CLIP text encoder."""

from lineas.models.families.unet import CLIP_MLP_OUT
from lineas.models.family import Family

FLUX = Family(
    "flux",
    presets={
        # to_out.0: image stream, to_add_out: text stream, single blocks' proj_out: both, concatenated
        "attn_out": [
            r"transformer\.transformer_blocks\.\d+\.attn\.(to_out\.0|to_add_out)",
            r"transformer\.single_transformer_blocks\.\d+\.proj_out",
        ],
        "ff_out": [r"transformer\.transformer_blocks\.\d+\.(ff|ff_context)\.net\.2"],
        # live only: whole blocks, :0 text stream, :1 image stream (the residual stream; no weight produces it)
        "blocks": [
            r"transformer\.(single_)?transformer_blocks\.\d+:0",
            r"transformer\.(single_)?transformer_blocks\.\d+:1",
        ],
        "text": [CLIP_MLP_OUT],
    },
    default_preset="attn_out",
)
