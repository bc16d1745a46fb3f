"""From a score map to a mask: the paper's post-processing, thresholds and operating points."""
