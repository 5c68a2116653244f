"""The shapes world: a synthetic text-to-image world whose attributes can be measured exactly, a small Stable
Diffusion pipeline trained on it (shipped in the library as ``offline:shapes-sd``), and the harness that measures
steering on it (see this folder's README)."""
