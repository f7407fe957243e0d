"""PaNReduce live data page (``panreduce web``)."""
