"""PaNReduce technique: single-crystal X-ray diffraction scans (Diamond I16)."""
