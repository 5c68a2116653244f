"""Models: where specs resolve (:mod:`sources`), the family tables (:mod:`families`), loading causal LMs
and diffusers pipelines as fitting backbones, and the random-weight models tests and benchmarks use."""
