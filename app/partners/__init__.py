"""Partners: the directory, eligibility matching and the need-to-know minimiser."""
