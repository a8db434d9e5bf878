"""The operator's console at /ui: static pages in `static/` that read the server's JSON APIs."""
