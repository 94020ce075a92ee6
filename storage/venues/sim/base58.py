"""Base58 (Bitcoin alphabet, as Solana uses it) and Solana-like transaction signatures."""
from __future__ import annotations

import random
import secrets

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}
SIGNATURE_BYTES = 64


def b58encode(data: bytes) -> str:
    """Encode bytes; each leading zero byte becomes a leading "1"."""
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(ALPHABET[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Decode base58 text; ValueError on a character outside the alphabet."""
    number = 0
    for ch in text:
        digit = _INDEX.get(ch)
        if digit is None:
            raise ValueError(f"{ch!r} is not a base58 character")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def new_signature(rng: random.Random | None = None) -> str:
    """A fresh signature: base58 of 64 random bytes (from `rng` when given, for tests)."""
    raw = rng.randbytes(SIGNATURE_BYTES) if rng is not None else secrets.token_bytes(SIGNATURE_BYTES)
    return b58encode(raw)


def is_valid_signature(text: object) -> bool:
    """True when `text` is base58 of exactly 64 bytes, as a Solana signature is."""
    if not isinstance(text, str) or not 64 <= len(text) <= 88:
        return False
    try:
        return len(b58decode(text)) == SIGNATURE_BYTES
    except ValueError:
        return False
