"""The Tornado web layer: the public HTTP and WebSocket API over `storage`.

Entry points: `web.app.make_app` (the routes) and `web.server.WebServer` (a running
server with its event hub). Never imports `actors`: they meet through the bus.
"""
