"""The method, in torch only: sites, hooks, affine maps, the W2 loss, sparsity, closed-form baselines,
the merge algebra and the files they are kept in. No Lightning, no Hydra, no model families here.

Data path: prompts -> site outputs (:mod:`hooks`, :mod:`sites`) -> maps (:mod:`maps`) -> loss
(:mod:`loss`) -> prox (:mod:`sparsity`) -> maps folder (:mod:`maps`) -> fold into weights (:mod:`merge`).
"""
