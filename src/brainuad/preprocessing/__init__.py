"""Raw scans into the atlas: the MNI152 atlas, N4 and registration with their plausibility,
brain mask, denoising and [0, 1] scaling (`pipeline.py` chains them)."""
