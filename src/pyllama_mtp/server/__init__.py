"""``pyllama-mtp serve``: an OpenAI-compatible server over draft-MTP sessions (the ``[serve]`` extra).

:func:`create_app` gives the ASGI app for any ASGI server; :func:`serve` runs it with uvicorn.
"""

from __future__ import annotations

from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app", "serve"]


def serve(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning") -> None:
    """Load the models and serve until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level)
