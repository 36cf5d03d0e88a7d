"""The reference backend: plain NumPy in float64, obviously right, not fast."""
