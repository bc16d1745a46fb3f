"""Files in and out: scans (NIfTI, DICOM series) validated, outputs written atomically,
manifests, weights read without unpickling code, SimpleITK conversions."""
