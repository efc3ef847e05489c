"""A self-hostable localtunnel server and client, wire compatible with the Node.js originals."""

__version__ = "0.1.0"
