"""Dispatch transports (http, local), backend selection and signatures."""
