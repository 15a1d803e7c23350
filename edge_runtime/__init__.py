"""Shipyard edge runtime: probe the node, sync verified bundles, select a backend, serve.

Stays light: importing it must not import torch, transformers or optimum.
"""

__version__ = "0.1.0"
