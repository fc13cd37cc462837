"""The operator front door: the `patchmoi` command and the Textual dashboard."""
