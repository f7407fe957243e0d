"""PaNReduce technique: small-angle neutron scattering (ISIS LOQ time-of-flight)."""
