"""`gradvar study` (placeholder registration; the study runner lives here)."""
def register(sub):
    pass
