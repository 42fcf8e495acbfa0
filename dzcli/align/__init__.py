"""Geometry and colour of a dual-camera pair.

Images follow the image convention: ``(3, H, W)`` float32 RGB in [0, 1], sRGB.

- :mod:`dzcli.align.ratio`: ``exif_ratio`` → ``RatioEstimate``, the zoom ratio from EXIF (an initial guess);
- :mod:`dzcli.align.register`: ``register`` → ``Registration``, where the tele lies in the uw; ``align_pair``
  → ``AlignedPair``, the uw crop ``lr`` and the tele resampled onto its grid at ``s``× (``hr``, ``mask``);
- :mod:`dzcli.align.color`: ``match_colors`` / ``fit_color`` / ``apply_color`` → ``ColorModel``, the tele in
  the uw's colours.

The functions are not re-exported here, so that ``dzcli.align.register`` stays the module.
"""
