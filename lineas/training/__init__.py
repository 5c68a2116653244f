"""Fitting on Lightning: the :class:`~lineas.training.module.LinEASModule`, its distributed part, and
:func:`~lineas.training.fit.fit`, the whole loop as one call."""
