"""Detections scored against lesion labels: per-subject and pooled metrics, summary, figures."""
