"""Pure functions over the records of finished runs (read from disk by the caller)."""
