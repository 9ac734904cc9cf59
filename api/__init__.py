"""The HTTP side: the Litestar app, its routes and error map, and the CLI."""
