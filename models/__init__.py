"""dzsr's networks (installed as ``dzsr_models``): one file per architecture, an explicit registry."""
