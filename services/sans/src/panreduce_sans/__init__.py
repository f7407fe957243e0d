"""PaNReduce technique: small-angle neutron scattering (ISIS LOQ time-of-flight)."""

__version__ = "0.1.0"
