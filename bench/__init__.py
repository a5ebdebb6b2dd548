"""smtpsite's benchmark suite: ``python -m bench`` (``--quick`` for the small CI run)."""
