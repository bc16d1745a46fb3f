"""A model folder loaded to detect (`Detector`), its thresholds taken (`calibration.py`), and
the `detect` stage over a manifest (`cohort.py`)."""
