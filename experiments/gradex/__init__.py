"""GradEx validation experiments (the 20-source addition task, a real-text variant)."""
