"""PaNReduce technique: full-field, 4D and neutron time-of-flight tomography."""

__version__ = "0.1.0"
