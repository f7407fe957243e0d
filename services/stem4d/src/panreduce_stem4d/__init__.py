"""PaNReduce 4D-STEM: virtual detectors, centre of mass / DPC, ellipse calibration, strain."""
