"""ProAPO: evolutionary prompt optimisation (builds on vlkit)."""
