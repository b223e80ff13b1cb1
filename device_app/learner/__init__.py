"""Online split-point learning: profiles, delay models and policies (numpy only)."""
