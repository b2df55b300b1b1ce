"""Applications: the command line, the HTML report, CLAIMS.md and model cards."""
