"""What changed between two visits of one person (`brainuad compare`, and `bids` per pair of
sessions): both visits on one grid (`visits.py`), the change detector (`change.py`), and the
whole way from two scans as acquired to the changes on the follow-up's grid (`compare.py`)."""
