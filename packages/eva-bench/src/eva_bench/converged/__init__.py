"""The converged report: every method at its own tuned learning rate, run until the validation metric
flattens, five paired seeds, held-out scores with confidence intervals (``benchmarks/converged.py``)."""
