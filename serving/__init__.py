"""wals2's model server: uvicorn + Starlette routes over a wals2 serving SavedModel, loaded with TensorFlow alone.

``python -m trainer.serve`` (``serving.cli``) is the entry point. The package imports no wals2 module, and wals2
imports nothing of it.
"""
