"""The shapes world: a synthetic text-to-image world whose attributes can be measured exactly
(:mod:`~lineas.models.shapes.world`), and a small Stable Diffusion pipeline trained on it
(:mod:`~lineas.models.shapes.pipeline`, :mod:`~lineas.models.shapes.train`)."""
