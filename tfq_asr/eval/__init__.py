"""Evaluation: word and character error rates over manifests."""
from .metrics import error_rates

__all__ = ["error_rates"]
