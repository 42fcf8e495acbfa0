"""Self-supervised training of the DZSR network: losses, the fit loop, EMA, resumable state."""
