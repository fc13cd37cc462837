"""patchmoi core: the headless library (config, records, store, intake, dispatch, runner, notify).

It never imports textual, starlette or uvicorn; the server and the dashboard are thin layers over it.
"""

__version__ = "0.1.0"
