"""Request and response models, one module per capability as in api/routes/ (synthesis, jobs, voices, info, cache,
openai_api), and `common` for what several share (the error contract, latents, audio formats). They validate input
and generate the OpenAPI document. They import no Redis and no SQL (tests/test_architecture.py checks it): a model
needs the shapes of things, not the services that hold them.
"""
