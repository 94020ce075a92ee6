"""Venues (DEXes): the interface the engine trades through, routing, and the simulator."""
from storage.venues.sim.base58 import is_valid_signature, new_signature

__all__ = ["new_signature", "is_valid_signature"]
