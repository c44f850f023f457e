"""The encrypted model store: per-model A/B slots, installed and switched atomically."""
