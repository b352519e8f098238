"""Voices: validation and safe serialization of latents, SQL storage, stored cloning results, upload
decoding, and the per-worker in-memory cache."""
