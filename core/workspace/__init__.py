"""The local workspace runner: steps, step execution, the git patch-stack rebuild."""
