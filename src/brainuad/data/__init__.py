"""Data the models see or are checked on: synthetic cohorts and lesions, the example scan, and
volumes cut into the axial slices a network reads."""
