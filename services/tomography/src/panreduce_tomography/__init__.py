"""PaNReduce technique: full-field, 4D and neutron time-of-flight tomography."""
