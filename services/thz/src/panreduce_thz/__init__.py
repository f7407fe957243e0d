"""PaNReduce technique: pulse-resolved THz spectroscopy (HZDR TELBE runs)."""
