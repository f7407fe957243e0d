"""PaNReduce gateway: routes Reduce by technique, tracks jobs, runs the embedded platform."""
