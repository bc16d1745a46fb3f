"""What a person reads: the paper's figures, results tables, and the HTML report of a scan."""
