"""Where and how brainuad runs: devices and precision, several processes, progress, timings."""
