"""PaNReduce reflectometry: time-of-flight neutron reflectivity to ORSO R(Q)."""
