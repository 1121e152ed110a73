"""Distillation: a fast GRU student from any transformers sequence classifier."""
