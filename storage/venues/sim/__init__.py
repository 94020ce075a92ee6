"""The simulated Raydium and Meteora: constant-product pools in the database's `sim_*` tables."""
from storage.venues.sim.base58 import is_valid_signature, new_signature

__all__ = ["SimChain", "open_chain", "new_signature", "is_valid_signature"]


def __getattr__(name: str):
    # The chain needs the database drivers; loaded on first use so that the pure modules
    # beside it (amm, base58) and the routing that imports them stay free of a database.
    if name in ("SimChain", "open_chain"):
        from storage.venues.sim import chain

        return getattr(chain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
