"""Risk core: per-customer features folded from payment events, and an explainable score."""
