"""Optimizely REST APIs: models, errors, and the client."""
