"""NeXus metadata extraction lives in the kit (``panreduce.metadata``), so that every
server answers the ``Metadata`` RPC; kept here for existing imports."""

from panreduce.metadata import Metadata, Record, extract, summarise

__all__ = ["Metadata", "Record", "extract", "summarise"]
