"""PaNReduce technique: SAXS/WAXS azimuthal integration, scanning maps and kinetics."""
