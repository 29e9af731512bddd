"""S2L validation experiments (the multi-skill toy and the real-text mixture)."""
