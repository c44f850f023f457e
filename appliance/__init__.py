"""The clinical AI appliance: the software that runs on the box."""

__version__ = "0.1.0"
