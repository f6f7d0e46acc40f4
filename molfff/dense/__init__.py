"""Dense-vector applications: 2-D test densities (and, later, SBI and tabular data)."""
