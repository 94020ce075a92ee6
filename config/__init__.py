"""Configuration: one frozen settings object built from the environment, and the token list.

This package is imported by every other one and imports nothing of ours.
"""
from config.settings import ConfigError, Settings, load_settings
from config.tokens import TOKENS, Token, find_token

__all__ = ["ConfigError", "Settings", "load_settings", "TOKENS", "Token", "find_token"]
