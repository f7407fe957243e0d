"""The kit's toy technique (it lives in panreduce.kit.toy; kept here for old imports)."""

from panreduce.kit.toy import Toy, ToyParameters, ToyPart

__all__ = ["Toy", "ToyParameters", "ToyPart"]
