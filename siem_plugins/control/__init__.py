"""The control plane: integrations stored as data, their secrets, API tokens."""
