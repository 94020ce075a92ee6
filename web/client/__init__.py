"""The command-line client (`engine submit`, `orders`, `order`, `quote`, `tokens`).

A client of the public HTTP and WebSocket API only, like any user's program: it never
imports storage or the server's handlers, so what it shows is what the API says.
"""
