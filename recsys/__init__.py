"""MiniOneRec and SASRec: generative recommendation (builds on vlkit)."""
