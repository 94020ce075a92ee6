"""The simulated Raydium and Meteora: constant-product pools in the database's `sim_*` tables."""
from storage.venues.sim.base58 import is_valid_signature, new_signature
from storage.venues.sim.chain import SimChain, open_chain

__all__ = ["SimChain", "open_chain", "new_signature", "is_valid_signature"]
