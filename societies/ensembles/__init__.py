"""Token-level collaboration: several models generate one answer together, token by token.

Each method is a chat backend, so any agent in a society can be an ensemble.
"""
