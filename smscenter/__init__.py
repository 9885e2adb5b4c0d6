"""smscenter: a carrier-side SMPP 3.4 connectivity server."""

__version__ = "0.1.0"
