"""PaNReduce serial crystallography: peakfinder8, hits-only CXI, CrystFEL streams, merging to MTZ."""
