"""PaNReduce technique: ptychography (DM, ML, LSQML) on CPU and GPU."""
