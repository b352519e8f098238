"""The farm's HTTP API: a thin Flask app (validation, responses). It never imports torch or the model.

The app itself is built by `api.app.create_app`. This package module imports nothing, so that importing one of its
light modules (the request models, the audio framing) or running `python -m api.keys` loads no more than that module
needs.
"""
