"""The Starlette HTTP server (headless mode): routes are thin calls into core."""
