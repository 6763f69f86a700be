"""The machinery behind ``fusedense bench``: workloads and systems, the timing method, the report."""
