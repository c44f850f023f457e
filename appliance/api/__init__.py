"""The HTTP API: KServe v2 inference protocol, task routes, results; built by create_app."""
